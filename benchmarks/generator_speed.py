"""Generator speed: odmaug's U-Net against the diffusers UNet2DModel peer at a matched size (issue 8).

Usage::

    python benchmarks/generator_speed.py                  # everything (~25-30 min on 2 cores, compile included)
    python benchmarks/generator_speed.py --no-compile     # without the torch.compile cases (saves minutes)
    python benchmarks/generator_speed.py --quick          # 3 rounds, scaling at n = 16, 64
    OMP_NUM_THREADS=1 python benchmarks/generator_speed.py --quick --threads 1 --batch 1 --rounds 1 \\
        --sampling-steps 1 --no-compile --no-memory --slow-bf16 skip --scaling-sizes 2 --scaling-steps 1 \\
        --loss-steps 2 --out /tmp/smoke.json               # a smoke check of the script itself (~1 min)

The networks (the matched size of docs/performance.md): diffusers ``UNet2DModel`` at 32 px, 3 channels,
block_out_channels (64, 128, 128, 128), layers_per_block 2, attention in one down and one up block
at 16x16, num_class_embeds 6; odmaug's default ``GeneratorConfig`` (base 64, channel_mult
(1, 2, 2, 2), 2 res blocks, attention at 16 px) for 5 grades + the null class. Both have 8,953,603
parameters. The batch is 32 images in every case.

All cases are built in one process and timed round-robin (each round times every case once, in a
rotating order); a case's figure is its median over rounds, and the odmaug/peer ratios of the
targets are paired within rounds. Cases:

- training step (forward + backward + grad clip + Adam + EMA lerp, identical optimizer code for both):
  odmaug's default fast path (what the trainer does by default: precision ``auto`` = bf16 autocast on
  CPUs with AVX-512 BF16 or AMX, channels_last model and batch), odmaug fp32 (channels_last, as the
  trainer), odmaug's fast path under ``torch.compile`` (``train.compile: true``), diffusers fp32
  eager, diffusers bf16 autocast + channels_last, diffusers pure bf16 weights + channels_last;
  odmaug's fast path at 64 px too (same network);
- one classifier-free-guided DDIM denoising step of 32 images (conditional + unconditional in one
  batch of 64, guidance 2): odmaug ``sample`` fast path, compiled (what ``sample.compile: true``
  does; compile time reported) and fp32, diffusers fp32 eager, diffusers
  pure bf16 + channels_last eager, and (unless ``--no-compile``) diffusers ``torch.compile`` +
  bf16 autocast + channels_last (compile time reported: cold in a fresh process with an empty
  inductor cache, and warm in the main process).

The CPU decides what is fast: on CPUs without native bf16 (no ``avx512_bf16``/``amx_bf16``, e.g. an
AVX2-only host) odmaug's ``auto`` precision is fp32, bf16 convolutions and matmuls run ~10-100x slower
than fp32, and so by default (``--compile-precision auto``, ``--slow-bf16 auto``) the compiled peer
runs fp32 and the diffusers bf16 eager cases are timed once after the rounds instead of every round.

Targets take the fastest odmaug case (default or compiled) and the fastest named peer case of each
round, and print beside each the bound: the ratio odmaug would reach if it ran its FLOPs at 100% of
the matmul ceiling of its compute precision measured in this run (bf16 with native bf16, else
fp32); a target above its bound cannot be met by any kernel work at an equal network and batch.

Also: FLOPs per case (``FlopCounterMode``; a compiled case has its eager twin's FLOPs) and the
fraction of the fp32 and bf16 matmul ceilings measured in this run; peak RSS per case (a fresh
process per case); odmaug sampling time for n images (``generate``, batch 64, DDIM with guidance);
the fast path's relative eps error against fp32 on the same weights and inputs (flagged above 2e-2),
and the compiled path's against eager; the training-loss guard (``--loss-steps``: the quickstart-size
network trained from the same seed in fp32, on the fast path and compiled, last-half mean losses
compared within 3 standard errors);
torch.profiler top ops of one odmaug training step and one denoising step on the fast path; the
ODM/DM step-cost ratios measured by ``generator_cost.py`` (cited from its JSON).

Prints tables (the targets last), writes ``benchmarks/results/generator_speed.json`` (or ``--out``).
The machine is shared: absolute times are hints, ratios measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import (ROOT, RESULTS_DIR, best_ceilings, flops_of, machine_record, matmul_ceilings, round_robin,
                     run_python, vm_hwm_mb)

RESULTS = RESULTS_DIR / "generator_speed.json"
NUM_CLASSES = 5  # grades; label 5 is the null class of classifier-free guidance (num_class_embeds 6)
GUIDANCE = 2.0
EPS_TOLERANCE = 2e-2  # relative eps error of the fast path above which the quality guard flags it
PEER_KWARGS = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 128, 128), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), num_class_embeds=NUM_CLASSES + 1,
)
# name: (side, kind, setting, image size)
CASES = {
    "odmaug-train-fast": ("odmaug", "train", "fast", 32),
    "odmaug-train-fp32": ("odmaug", "train", "fp32", 32),
    "odmaug-train-compiled": ("odmaug", "train", "compiled", 32),
    "peer-train-fp32": ("diffusers", "train", "fp32", 32),
    "peer-train-bf16-autocast-cl": ("diffusers", "train", "bf16-autocast-cl", 32),
    "peer-train-bf16-cl": ("diffusers", "train", "bf16-cl", 32),
    "odmaug-train-fast-64px": ("odmaug", "train", "fast", 64),
    "odmaug-sample-fast": ("odmaug", "sample", "fast", 32),
    "odmaug-sample-fp32": ("odmaug", "sample", "fp32", 32),
    "odmaug-sample-compiled": ("odmaug", "sample", "compiled", 32),
    "peer-sample-fp32": ("diffusers", "sample", "fp32", 32),
    "peer-sample-bf16-cl": ("diffusers", "sample", "bf16-cl", 32),
    "peer-sample-compiled": ("diffusers", "sample", "compiled", 32),
}
SETTING_TEXT = {
    "fast": "default: {}",
    "fp32": "fp32 eager",
    "bf16-autocast-cl": "bf16 autocast + channels_last, eager",
    "bf16-cl": "pure bf16 + channels_last, eager",
    "compiled": "torch.compile + {} + channels_last",
    "odmaug-compiled": "{} + torch.compile",
}
SLOW_BF16_CASES = ("peer-train-bf16-autocast-cl", "peer-train-bf16-cl", "peer-sample-bf16-cl")
PEER_EAGER_TRAIN = ("peer-train-fp32", "peer-train-bf16-autocast-cl", "peer-train-bf16-cl")
# (label, odmaug case(s), peer case(s), required ratio of peer time / odmaug time); of several cases
# on a side, each round takes the fastest. odmaug's cases are its default (precision auto, eager) and
# its opt-in compiled settings (train.compile, sample.compile).
ODMAUG_TRAIN = ("odmaug-train-fast", "odmaug-train-compiled")
ODMAUG_SAMPLE = ("odmaug-sample-fast", "odmaug-sample-compiled")
TARGETS = [
    ("training >= 3x diffusers fp32 eager", ODMAUG_TRAIN, ("peer-train-fp32",), 3.0),
    ("training >= 2x diffusers best eager", ODMAUG_TRAIN, PEER_EAGER_TRAIN, 2.0),
    ("sampling >= 5x diffusers fp32 eager", ODMAUG_SAMPLE, ("peer-sample-fp32",), 5.0),
    ("sampling >= 1.5x diffusers compiled", ODMAUG_SAMPLE, ("peer-sample-compiled",), 1.5),
]


def odmaug_generator(size: int) -> torch.nn.Module:
    """odmaug's default generator for 5 grades at ``size`` px (seed 0), with a non-zero output layer.

    The output convolution is zero-initialised for training (Ho et al.); it gets PyTorch's default
    init here so that eps predictions (and the quality guard's relative error) are not trivially 0.
    """
    from odmaug.config import GeneratorConfig
    from odmaug.diffusion import build_generator

    torch.manual_seed(0)
    model = build_generator(GeneratorConfig(), NUM_CLASSES, size)
    model.out_conv.reset_parameters()
    return model


def peer_generator() -> torch.nn.Module:
    """The diffusers UNet2DModel peer (seed 0)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**PEER_KWARGS)


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Case:
    """One measured configuration: a network in a precision/layout setting and a timed unit of work.

    ``work()`` runs one unit: one training step, or ``sampling_steps`` guided DDIM steps of the batch.
    """

    def __init__(self, name: str, batch: int, sampling_steps: int, compile_precision: str = "bf16") -> None:
        from odmaug.config import DiffusionConfig, OrdinalConfig
        from odmaug.diffusion import DiffusionLoss, NoiseSchedule
        from odmaug.precision import autocast, precision_name, resolve_precision

        side, kind, setting, size = CASES[name]
        self.name, self.side, self.kind, self.setting, self.batch = name, side, kind, setting, batch
        self.sampling_steps = sampling_steps if kind == "sample" else 1
        device = torch.device("cpu")
        cl = torch.channels_last
        # odmaug always runs channels_last (trainer, generate); the peer's fp32 eager case is the default NCHW
        fmt = torch.contiguous_format if (side == "diffusers" and setting == "fp32") else cl
        g = torch.Generator().manual_seed(0)
        x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).contiguous(memory_format=fmt)
        labels = torch.arange(batch) % NUM_CLASSES
        if side == "odmaug":
            # what the trainer and ``generate`` do: channels_last model and batch, autocast of the precision
            dtype = resolve_precision("fp32" if setting == "fp32" else "auto", device)
            model = odmaug_generator(size).to(memory_format=cl)
            ctx = lambda: autocast(device, dtype)  # noqa: E731
            self.precision = precision_name(dtype)
            mdtype = torch.float32
            detail = ("bf16 autocast" if dtype is not None else "fp32 (no native bf16)") + " + channels_last"
        else:
            model = peer_generator()
            if setting == "compiled":
                self.precision = compile_precision
            else:
                self.precision = "fp32" if setting == "fp32" else "bf16"
            mdtype = torch.bfloat16 if setting == "bf16-cl" else torch.float32
            if fmt is cl:
                model = model.to(dtype=mdtype, memory_format=cl)
            use_autocast = "autocast" in setting or (setting == "compiled" and compile_precision == "bf16")
            autocast_dtype = torch.bfloat16 if use_autocast else None
            ctx = lambda: autocast(device, autocast_dtype)  # noqa: E731
            detail = "bf16 autocast" if use_autocast else "fp32"
        text_key = "odmaug-compiled" if side == "odmaug" and setting == "compiled" else setting
        self.setting_text = SETTING_TEXT[text_key].format(detail)
        self.info = {"case": name, "side": side, "kind": kind, "setting": self.setting_text, "image_size": size,
                     "batch": batch, "precision": self.precision, "parameters": parameters(model)}
        self.model = model
        self.compile_seconds = None
        self.last = None
        if kind == "train":
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
            ema = [p.detach().clone() for p in model.parameters()]
            if side == "odmaug":
                loss_fn = DiffusionLoss(DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0)), NUM_CLASSES)
                schedule = NoiseSchedule.from_config(DiffusionConfig())
                net = torch.compile(model) if setting == "compiled" else model  # as the trainer's train.compile

                def loss_of_batch():  # the trainer's DM loss (t, noise, label dropout, q_sample, MSE)
                    with ctx():
                        return loss_fn(net, x0, labels, schedule, g)["loss"]
            else:
                from diffusers import DDPMScheduler

                scheduler = DDPMScheduler(num_train_timesteps=1000)

                def loss_of_batch():  # diffusers' training-script loss with label dropout for guidance
                    noise = torch.randn(x0.shape, generator=g).contiguous(memory_format=fmt)
                    t = torch.randint(1000, (batch,), generator=g)
                    dropped = torch.rand(batch, generator=g) < 0.1
                    cond = torch.where(dropped, torch.full_like(labels, NUM_CLASSES), labels)
                    xt = scheduler.add_noise(x0, noise, t)
                    with ctx():
                        pred = model(xt.to(mdtype), t, class_labels=cond).sample
                    return F.mse_loss(pred.float(), noise)

            def work():  # identical optimizer code for both sides (as odmaug's trainer does it)
                loss = loss_of_batch()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
                opt.step()
                with torch.no_grad():
                    torch._foreach_lerp_(ema, list(model.parameters()), 0.001)
                return loss
        else:
            model.eval()
            noise = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=fmt)
            if side == "odmaug":
                from odmaug.diffusion import sample
                from odmaug.diffusion.sampling import compile_for_sampling

                schedule = NoiseSchedule.from_config(DiffusionConfig())
                if setting == "compiled":  # what generate / augment do with sample.compile (in place)
                    compile_for_sampling(model, True, 0, device)

                def work():  # odmaug's sampler: cond + uncond in one batch of 2 x batch per step
                    with ctx():
                        self.last = sample(model, noise, labels, schedule, sampler="ddim", steps=self.sampling_steps,
                                           guidance_scale=GUIDANCE)
                    return self.last
            else:
                from diffusers import DDIMScheduler

                scheduler = DDIMScheduler(num_train_timesteps=1000)
                scheduler.set_timesteps(self.sampling_steps)
                net = torch.compile(model) if setting == "compiled" else model
                both = torch.cat([labels, torch.full_like(labels, NUM_CLASSES)])

                @torch.no_grad()
                def work():  # the pipeline loop: cond + uncond in one batch, guidance, scheduler step
                    x = noise
                    for t in scheduler.timesteps:
                        tt = torch.full((2 * batch,), int(t), dtype=torch.long)
                        with ctx():
                            eps = net(torch.cat([x, x]).to(mdtype), tt, class_labels=both).sample.float()
                        eps_c, eps_u = eps.chunk(2)
                        x = scheduler.step(eps_u + GUIDANCE * (eps_c - eps_u), t, x).prev_sample
                    self.last = x
                    return x
        self.work = work
        self.times: list[float] = []

    def warm_up_and_count(self, flops_from: "Case | None" = None, warm_up: bool = True) -> None:
        """Run one unit (timed: the compile time of a compiled case), then count its FLOPs.

        ``flops_from``: take the FLOPs of this case instead (the same network and work: the eager
        peer for the compiled one, whose graphs FlopCounterMode cannot see, and the fp32 peer for
        cases too slow to run an extra time).
        """
        if warm_up:
            t0 = time.perf_counter()
            self.work()
            first = time.perf_counter() - t0
        if warm_up and self.setting == "compiled":
            t0 = time.perf_counter()
            self.work()
            self.compile_seconds = first - (time.perf_counter() - t0)
        # FlopCounterMode does not see inside compiled graphs: a compiled case has the eager peer's FLOPs
        if flops_from is not None:
            self.info["flops_per_unit"] = flops_from.info["flops_per_unit"] // flops_from.sampling_steps * self.sampling_steps
        else:
            self.info["flops_per_unit"] = flops_of(self.work)

    def summary(self) -> dict:
        sec = statistics.median(self.times)
        out = dict(self.info, repetitions=len(self.times), all_seconds=[round(t, 4) for t in self.times])
        out["gflops_per_second"] = out["flops_per_unit"] / sec / 1e9
        if self.kind == "train":
            out.update(seconds_per_unit=sec, images_per_second=self.batch / sec)
        else:
            per_step = sec / self.sampling_steps
            out.update(seconds_per_unit=per_step, image_steps_per_second=self.batch / per_step,
                       sampling_steps_per_unit=self.sampling_steps)
        if self.compile_seconds is not None:
            out["compile_seconds_warm_cache"] = self.compile_seconds
        return out


# ----------------------------------------------------------------------------- memory (fresh processes)
def memory_main(name: str, batch: int, sampling_steps: int, compile_precision: str, units: int = 2) -> None:
    """Child process: build case ``name``, run ``units`` units, print JSON with peak RSS and unit times."""
    case = Case(name, batch, sampling_steps, compile_precision)
    base = vm_hwm_mb()
    seconds = []
    for _ in range(units):
        t0 = time.perf_counter()
        case.work()
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "rss_before_first_unit_mb": base, "unit_seconds": seconds}))


def memory_of(name: str, batch: int, sampling_steps: int, args, units: int = 2, timeout: float | None = None) -> dict:
    """Peak RSS of case ``name`` in a fresh process (same batch, steps, threads, compile precision)."""
    code = (f"import torch; torch.set_num_threads({args.threads}); import generator_speed as b; "
            f"b.memory_main({name!r}, {batch}, {sampling_steps}, {args.compile_precision!r}, {units})")
    return json.loads(run_python(code, timeout=timeout))


# ----------------------------------------------------------------------------- quality guard
def quality_guard(cases: dict[str, Case], batch: int) -> dict:
    """Relative error of fast-path eps predictions vs fp32, on the same weights and inputs.

    odmaug: the seed-0 network (eval mode) in fp32, under bf16 autocast, and on the fast path
    (which is one of the two: bf16 where the CPU has native bf16), on 2 x batch inputs x_t at
    timesteps spread over 0..999 with grades and the null class. Also the peer's pure bf16 weights
    vs its fp32 weights on the same inputs (for reference), and the odmaug fast vs fp32 sampling
    results of the timed cases (same noise, same weights).
    """
    from odmaug.config import DiffusionConfig
    from odmaug.diffusion import NoiseSchedule
    from odmaug.precision import autocast, resolve_precision

    g = torch.Generator().manual_seed(1)
    n = 2 * batch
    x0 = (torch.rand(n, 3, 32, 32, generator=g) * 2 - 1).contiguous(memory_format=torch.channels_last)
    noise = torch.randn(x0.shape, generator=g).contiguous(memory_format=torch.channels_last)
    t = torch.linspace(0, 999, n).long()
    labels = torch.arange(n) % (NUM_CLASSES + 1)
    xt = NoiseSchedule.from_config(DiffusionConfig()).q_sample(x0, t, noise)
    rel = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    out = {"inputs": f"{n} x_t at t = 0..999, grades 0..4 and null", "tolerance": EPS_TOLERANCE}
    cpu = torch.device("cpu")
    fast_dtype = resolve_precision("auto", cpu)
    with torch.no_grad():
        model = odmaug_generator(32).to(memory_format=torch.channels_last).eval()
        eps32 = model(xt, t, labels)
        with autocast(cpu, torch.bfloat16):  # odmaug's bf16 path (the fast path on CPUs with native bf16)
            eps_bf16 = model(xt, t, labels)
        eps_fast = eps_bf16 if fast_dtype is not None else eps32
        out["odmaug_fast_precision"] = "fp32" if fast_dtype is None else "bf16"
        out["odmaug_eps_rel_error"] = rel(eps_fast, eps32)
        out["odmaug_eps_rel_error_max_per_image"] = max(rel(eps_fast[i], eps32[i]) for i in range(n))
        out["odmaug_bf16_eps_rel_error"] = rel(eps_bf16, eps32)
        out["odmaug_bf16_eps_rel_error_max_per_image"] = max(rel(eps_bf16[i], eps32[i]) for i in range(n))
        peer = peer_generator().eval()
        p32 = peer(xt.contiguous(), t, class_labels=labels).sample
        peer_bf16 = peer.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        p16 = peer_bf16(xt.to(torch.bfloat16), t, class_labels=labels).sample
        out["peer_pure_bf16_eps_rel_error"] = rel(p16, p32)
    fast, fp32 = cases.get("odmaug-sample-fast"), cases.get("odmaug-sample-fp32")
    if fast is not None and fp32 is not None and fast.last is not None and fp32.last is not None:
        out["odmaug_sample_rel_error"] = rel(fast.last, fp32.last)
        out["sample_steps"] = fast.sampling_steps
    compiled = cases.get("odmaug-sample-compiled")
    if compiled is not None:  # n = 2 x batch: the shape its (static) compiled kernels were built for
        with torch.no_grad(), autocast(cpu, fast_dtype):
            eps_compiled = compiled.model(xt, t, labels)  # same seed-0 weights, compiled in place
        out["odmaug_compiled_eps_rel_error"] = rel(eps_compiled, eps_fast)
        if fast is not None and fast.last is not None and compiled.last is not None:
            out["odmaug_compiled_sample_rel_error"] = rel(compiled.last, fast.last)
        out["compiled_flagged"] = out["odmaug_compiled_eps_rel_error"] > EPS_TOLERANCE
    out["flagged"] = out["odmaug_eps_rel_error"] > EPS_TOLERANCE
    out["bf16_flagged"] = out["odmaug_bf16_eps_rel_error"] > EPS_TOLERANCE
    return out


def loss_guard(steps: int, batch: int, compiled: bool) -> dict:
    """Training losses of odmaug's fast path (and compiled path) vs fp32 eager at equal steps.

    The quickstart-size network (1.53 M, base 32) at 32 px on odmaug's synthetic fundus images
    (256, grades 0..4), trained ``steps`` steps of the trainer's DM loss with Adam 5e-4 from the
    same weights and the same random stream in every setting. Reported: the mean loss of the last
    half of the steps per setting, the difference to fp32, and the noise it is judged against (the
    standard error of that mean over steps); a setting is flagged when it differs by more than
    3 standard errors.
    """
    from odmaug.config import DiffusionConfig, GeneratorConfig, OrdinalConfig
    from odmaug.data import to_model_range
    from odmaug.data.synthetic import draw_fundus
    from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator
    from odmaug.precision import autocast, precision_name, resolve_precision

    cpu = torch.device("cpu")
    labels_all = torch.arange(256) % NUM_CLASSES
    images = torch.stack([torch.from_numpy(draw_fundus(int(c), NUM_CLASSES, 32, 0, i)).permute(2, 0, 1)
                          for i, c in enumerate(labels_all)])
    cfg = GeneratorConfig(base_channels=32, channel_mult=[1, 2, 2, 2], num_res_blocks=1, attention_resolutions=[8])
    loss_fn = DiffusionLoss(DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0)), NUM_CLASSES)
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    settings = {"fp32": ("fp32", False), "fast": ("auto", False)}
    if compiled:
        settings["compiled"] = ("auto", True)
    out = {"network": "quickstart size (base 32, 1.53 M)", "steps": steps, "batch": batch, "settings": {}}
    for name, (precision, use_compile) in settings.items():
        print(f"loss guard: {name} ...", file=sys.stderr, flush=True)
        dtype = resolve_precision(precision, cpu)
        torch.manual_seed(0)
        model = build_generator(cfg, NUM_CLASSES, 32).to(memory_format=torch.channels_last).train()
        net = torch.compile(model) if use_compile else model
        opt = torch.optim.Adam(model.parameters(), lr=5e-4, foreach=True)
        g = torch.Generator().manual_seed(0)
        losses = []
        for _ in range(steps):
            index = torch.randint(len(labels_all), (batch,), generator=g)
            x0 = to_model_range(images[index]).contiguous(memory_format=torch.channels_last)
            with autocast(cpu, dtype):
                loss = loss_fn(net, x0, labels_all[index], schedule, g)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        out["settings"][name] = {"precision": precision_name(dtype), "compiled": use_compile, "losses": losses}
    half = steps // 2
    ref = torch.tensor(out["settings"]["fp32"]["losses"][half:])
    sem = float(ref.std() / len(ref) ** 0.5)
    for name, r in out["settings"].items():
        tail = torch.tensor(r["losses"][half:])
        r["mean_last_half"] = float(tail.mean())
        r["difference_to_fp32"] = float(tail.mean() - ref.mean())
        r["flagged"] = abs(r["difference_to_fp32"]) > 3 * sem
    out["noise_sem_fp32"] = sem
    out["flagged"] = any(r["flagged"] for r in out["settings"].values())
    return out


# ----------------------------------------------------------------------------- scaling and profile
def sampling_scaling(sizes: list[int], steps: int) -> list[dict]:
    """Wall time of ``generate`` (fast path, batch 64, DDIM ``steps`` steps, guidance) for n images."""
    from odmaug.config import DiffusionConfig
    from odmaug.diffusion import NoiseSchedule, generate

    model = odmaug_generator(32).to(memory_format=torch.channels_last).eval()
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    generate(model, schedule, [0] * 4, list(range(4)), steps=1, guidance_scale=GUIDANCE, precision="auto")  # warm-up
    out = []
    for n in sizes:
        print(f"sampling scaling: n = {n} ...", file=sys.stderr, flush=True)
        labels = [i % NUM_CLASSES for i in range(n)]
        t0 = time.perf_counter()
        generate(model, schedule, labels, list(range(n)), sampler="ddim", steps=steps, guidance_scale=GUIDANCE,
                 batch_size=64, precision="auto")
        sec = time.perf_counter() - t0
        out.append({"n": n, "steps": steps, "seconds": sec, "seconds_per_image": sec / n,
                    "image_steps_per_second": n * steps / sec})
    for row in out:
        row["per_image_time_vs_smallest_n"] = row["seconds_per_image"] / out[0]["seconds_per_image"]
    return out


def profile_top_ops(case: Case, top: int = 12) -> list[dict]:
    """torch.profiler top ops (self CPU time) of one unit of ``case`` (after warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    case.work()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        case.work()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3 / case.sampling_steps,
             "share": e.self_cpu_time_total / total, "calls": e.count // case.sampling_steps}
            for e in events[:top]]


def odm_step_cost(native_bf16: bool) -> dict | None:
    """The ODM/DM step-time ratios measured by generator_cost.py (its JSON), if present.

    On a CPU without native bf16 the fp32 measurement (``generator_cost_fp32.json``) is the one
    that applies, when it exists.
    """
    paths = [RESULTS_DIR / "generator_cost.json"]
    if not native_bf16:
        paths.insert(0, RESULTS_DIR / "generator_cost_fp32.json")
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        return None
    data = json.loads(path.read_text())
    keep = {k: v for k, v in data.get("paired_time_ratios", {}).items() if "-odm" in k}
    return {"source": str(path.relative_to(ROOT)), "date": data.get("date"), "ratios": keep,
            "cpu": data.get("machine", {}).get("cpu_model"),
            "note": "quickstart-size (1.53 M) network, batch 32; ODM with docs/method.md defaults (random triplets, "
                    "whole batch) = qs-odm-<precision> / qs-dm-<precision>; include-true-frac0.25 is the quickstart's"}


# ----------------------------------------------------------------------------- main
def main() -> None:
    from odmaug.precision import cpu_bf16_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, scaling at n = 16, 64")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 7, 3 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--batch", type=int, default=32, help="images per case (default 32; smaller for smoke checks)")
    parser.add_argument("--sampling-steps", type=int, default=3, help="DDIM steps per timed sampling unit (default 3)")
    parser.add_argument("--scaling-sizes", type=int, nargs="*", default=None,
                        help="n for the sampling scaling (default 64 256 1024; 16 64 with --quick; none: skip)")
    parser.add_argument("--scaling-steps", type=int, default=4, help="DDIM steps of the scaling runs (default 4)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile cases, odmaug's and the peer's (they take minutes)")
    parser.add_argument("--compile-precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="the compiled peer's precision: bf16 autocast, fp32, or auto = bf16 where the CPU has "
                             "native bf16 (AVX-512 BF16 / AMX), else fp32")
    parser.add_argument("--compile-timeout", type=float, default=900.0,
                        help="give up on the compiled peer when its cold compile run takes longer (seconds)")
    parser.add_argument("--slow-bf16", choices=("auto", "full", "once", "skip"), default="auto",
                        help="the diffusers bf16 eager cases: timed every round (full), one unit after the rounds "
                             "(once), or not at all; auto = full with native bf16, else once (bf16 is ~10x slower "
                             "than fp32 on CPUs without it)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case peak RSS processes")
    parser.add_argument("--loss-steps", type=int, default=60,
                        help="steps of the training-loss quality guard per setting (default 60; 0: skip)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler top ops")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    native_bf16 = bool(cpu_bf16_flags())
    if args.compile_precision == "auto":
        args.compile_precision = "bf16" if native_bf16 else "fp32"
    slow_mode = args.slow_bf16 if args.slow_bf16 != "auto" else ("full" if native_bf16 else "once")
    rounds = args.rounds or (3 if args.quick else 7)
    sizes = args.scaling_sizes if args.scaling_sizes is not None else ([16, 64] if args.quick else [64, 256, 1024])
    names = args.only or list(CASES)
    notes = []
    if not native_bf16:
        notes.append("this CPU has no native bf16 (no avx512_bf16/amx_bf16 in /proc/cpuinfo): odmaug's default "
                     "precision (auto) is fp32 here, and bf16 runs ~10x slower than fp32")
    if args.no_compile:
        names = [n for n in names if CASES[n][2] != "compiled"]
    once = [n for n in names if n in SLOW_BF16_CASES] if slow_mode in ("once", "skip") else []
    if slow_mode == "skip":
        names = [n for n in names if n not in once]
        if once:
            notes.append(f"skipped (--slow-bf16 skip): {', '.join(once)}")
        once = []
    elif once:
        notes.append(f"timed once (one unit, 1 DDIM step for sampling, FLOPs of the fp32 peer) after the rounds, "
                     f"not round-robin, because bf16 is slow on this CPU: {', '.join(once)}")

    param_counts = {"odmaug": parameters(odmaug_generator(32)), "diffusers": parameters(peer_generator())}
    ceilings = matmul_ceilings()
    compiled_cold = None
    if "peer-sample-compiled" in names:
        # A fresh process with an empty inductor cache: the cold compile time (capped) and the peak
        # RSS; the main process then shares that cache (its compile time is the warm one).
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="odmaug-bench-inductor-")
        print("compiling the diffusers peer in a fresh process (cold inductor cache) ...", file=sys.stderr, flush=True)
        try:
            compiled_cold = memory_of("peer-sample-compiled", args.batch, args.sampling_steps, args,
                                      timeout=args.compile_timeout)
            first, second = compiled_cold["unit_seconds"]
            compiled_cold["compile_seconds_cold_cache"] = first - second
        except subprocess.TimeoutExpired:
            names.remove("peer-sample-compiled")
            notes.append(f"diffusers torch.compile peer skipped: its cold compile took over {args.compile_timeout:.0f} s")

    cases: dict[str, Case] = {}
    for name in sorted(names, key=lambda n: n in once or CASES[n][2] == "compiled"):  # the eager cases first
        print(f"building and warming up {name} ...", file=sys.stderr, flush=True)
        side, kind = CASES[name][:2]
        cases[name] = Case(name, args.batch, 1 if name in once else args.sampling_steps, args.compile_precision)
        flops_from = None
        if name in once or CASES[name][2] == "compiled":
            # the same network and work, eager: odmaug's default path, or the fp32 peer
            eager = f"odmaug-{kind}-fast" if side == "odmaug" else f"peer-{kind}-fp32"
            flops_from = cases.get(eager)
            if flops_from is None:
                flops_from = Case(eager, args.batch, args.sampling_steps)
                flops_from.warm_up_and_count()
        cases[name].warm_up_and_count(flops_from, warm_up=name not in once)
    cases = {name: cases[name] for name in names}  # back in the order of CASES

    timed = {name: case.work for name, case in cases.items() if name not in once}
    per_round = round_robin(timed, rounds)
    for this_round in per_round:
        for name, sec in this_round.items():
            cases[name].times.append(sec)
    for name in once:
        print(f"timing {name} once ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cases[name].work()
        cases[name].times.append(time.perf_counter() - t0)
    ceilings = best_ceilings(ceilings, matmul_ceilings())
    results = {name: case.summary() for name, case in cases.items()}
    if compiled_cold is not None and "peer-sample-compiled" in results:
        results["peer-sample-compiled"]["compile_seconds_cold_cache"] = compiled_cold["compile_seconds_cold_cache"]

    def unit_time(r: dict, name: str) -> float:
        """Seconds per training step or per denoising step of ``name`` in round ``r`` (its median if not timed there)."""
        case = cases[name]
        sec = r[name] if name in r else statistics.median(case.times)
        return sec / case.sampling_steps

    # targets: peer time / odmaug time (= throughput ratio odmaug / peer), paired within rounds
    # bound: the ratio odmaug would reach running its FLOPs at 100% of the matmul ceiling of the
    # precision its fast path computes in (bf16 with native bf16 units, else fp32), against the
    # peer's time of the same round: no kernel tuning can beat it at an equal network and work.
    ceiling_name = "bf16" if native_bf16 else "fp32"
    targets = []
    for label, ours_all, peers, required in TARGETS:
        have = [p for p in peers if p in cases]
        ours = [o for o in ours_all if o in cases]
        if not ours or not have:
            targets.append({"target": label, "required": required, "ratio": None, "status": "not measured"})
            continue
        ratios = [min(unit_time(r, p) for p in have) / min(unit_time(r, o) for o in ours) for r in per_round]
        best = min(have, key=lambda p: results[p]["seconds_per_unit"])
        best_ours = min(ours, key=lambda o: results[o]["seconds_per_unit"])
        flops_per_step = results[best_ours]["flops_per_unit"] / (results[best_ours].get("sampling_steps_per_unit") or 1)
        floor_seconds = flops_per_step / (ceilings[ceiling_name] * 1e9)
        bound = statistics.median(min(unit_time(r, p) for p in have) / floor_seconds for r in per_round)
        ratio = statistics.median(ratios)
        targets.append({"target": label, "odmaug_cases": ours, "best_odmaug_case": best_ours, "peer_cases": have,
                        "best_peer_case": best, "required": required, "ratio": ratio, "per_round": ratios,
                        "status": "met" if ratio >= required else "missed",
                        "shortfall_factor": None if ratio >= required else required / ratio,
                        "bound_at_ceiling": bound, "bound_ceiling": ceiling_name,
                        "reachable_at_equal_flops": bound >= required})
    extra_ratios = {}
    for a, b in (("odmaug-train-fast-64px", "odmaug-train-fast"), ("odmaug-train-fp32", "odmaug-train-fast"),
                 ("odmaug-sample-fp32", "odmaug-sample-fast"), ("peer-train-fp32", "odmaug-train-fp32"),
        ("odmaug-train-fast", "odmaug-train-compiled"), ("odmaug-sample-fast", "odmaug-sample-compiled"),
                 ("peer-sample-fp32", "odmaug-sample-fp32"), ("peer-train-bf16-cl", "peer-train-fp32"),
                 ("peer-train-bf16-autocast-cl", "peer-train-fp32"), ("peer-sample-bf16-cl", "peer-sample-fp32"),
                 ("peer-sample-compiled", "peer-sample-fp32")):
        if a in cases and b in cases:
            extra_ratios[f"{a} / {b} (time)"] = statistics.median(unit_time(r, a) / unit_time(r, b) for r in per_round)

    print("quality guard ...", file=sys.stderr, flush=True)
    quality = quality_guard(cases, args.batch)
    if args.loss_steps:
        quality["training_loss"] = loss_guard(args.loss_steps, args.batch, "odmaug-train-compiled" in cases)
    scaling = sampling_scaling(sizes, args.scaling_steps) if sizes else []
    profiles = {}
    if not args.no_profile:
        for name in ("odmaug-train-fast", "odmaug-sample-fast"):
            if name in cases:
                print(f"profiling {name} ...", file=sys.stderr, flush=True)
                profiles[name] = profile_top_ops(cases[name])
    if not args.no_memory:
        for name, case in cases.items():
            if name == "peer-sample-compiled":
                mem = compiled_cold
            else:
                print(f"peak memory of {name} ...", file=sys.stderr, flush=True)
                mem = memory_of(name, case.batch, case.sampling_steps, args, units=1 if name in once else 2)
            results[name]["peak_rss_mb"] = mem["peak_rss_mb"]
            results[name]["rss_before_first_unit_mb"] = mem["rss_before_first_unit_mb"]

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": ("python benchmarks/generator_speed.py " + " ".join(sys.argv[1:])).strip(),
        "machine": machine_record(),
        "native_bf16": native_bf16,
        "note": "shared machine: absolute times are hints; ratios are paired within rounds. Identical optimizer "
                "code (Adam foreach, grad clip, EMA lerp) on both sides; odmaug keeps its default dropout 0.1, "
                "diffusers its default 0.",
        "parameters": param_counts,
        "networks": {"odmaug": "odmaug.config.GeneratorConfig() defaults (base 64, channel_mult 1,2,2,2, "
                               "2 res blocks, attention at 16 px, 1 head), 5 grades + null",
                     "diffusers": {k: list(v) if isinstance(v, tuple) else v for k, v in PEER_KWARGS.items()}},
        "rounds": rounds,
        "batch": args.batch,
        "matmul_ceiling_gflops": ceilings,
        "cases": results,
        "targets": targets,
        "other_time_ratios": extra_ratios,
        "quality_guard": quality,
        "sampling_scaling": scaling,
        "profiles_fast_path": profiles,
        "odm_step_cost": odm_step_cost(native_bf16),
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, args)


def print_report(report: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=190)
    ceilings = report["matmul_ceiling_gflops"]
    counts = report["parameters"]
    console.print(f"parameters: odmaug {counts['odmaug']:,}, diffusers peer {counts['diffusers']:,}")
    for name, ops in report["profiles_fast_path"].items():
        table = Table(title=f"torch.profiler top ops (self CPU), one {'training step' if 'train' in name else 'denoising step'}"
                            f" of {name}", title_justify="left")
        for col in ("op", "self ms", "share", "calls"):
            table.add_column(col, justify="left" if col == "op" else "right")
        for op in ops:
            table.add_row(op["op"], f"{op['self_cpu_ms']:.1f}", f"{100 * op['share']:.1f}%", str(op["calls"]))
        console.print(table)
    if report["sampling_scaling"]:
        table = Table(title="odmaug sampling (generate, fast path, batch 64, guidance 2) vs n", title_justify="left")
        for col in ("n", "DDIM steps", "seconds", "s/image", "img-steps/s", "per-image time vs first n"):
            table.add_column(col, justify="right")
        for row in report["sampling_scaling"]:
            table.add_row(str(row["n"]), str(row["steps"]), f"{row['seconds']:.1f}", f"{row['seconds_per_image']:.3f}",
                          f"{row['image_steps_per_second']:.1f}", f"{row['per_image_time_vs_smallest_n']:.2f}")
        console.print(table)

    table = Table(title=f"generator speed, {report['machine']['cpu_model']}, {report['machine']['torch_threads']} threads, "
                        f"batch {report['batch']}, {report['rounds']} rounds, {report['date']}", title_justify="left")
    for col in ("case", "setting", "params", "s/unit", "img/s | img-steps/s", "GFLOP/unit", "GFLOP/s",
                "% bf16 ceil", "% fp32 ceil", "peak RSS MiB"):
        table.add_column(col, justify="left" if col in ("case", "setting") else "right", no_wrap=col == "case")
    for name, r in report["cases"].items():
        speed = r.get("images_per_second", r.get("image_steps_per_second"))
        unit_flops = r["flops_per_unit"] / (r.get("sampling_steps_per_unit") or 1)
        rss = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        setting = r["setting"] + (f" [{r['image_size']} px]" if r["image_size"] != 32 else "")
        table.add_row(name, setting, f"{r['parameters'] / 1e6:.2f} M", f"{r['seconds_per_unit']:.3f}", f"{speed:.1f}",
                      f"{unit_flops / 1e9:.1f}", f"{r['gflops_per_second']:.0f}",
                      f"{100 * r['gflops_per_second'] / ceilings['bf16']:.0f}%",
                      f"{100 * r['gflops_per_second'] / ceilings['fp32']:.0f}%", rss)
    console.print(table)
    console.print(f"matmul ceilings measured in this run: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} "
                  "GFLOP/s. s/unit: one training step (batch images), or one guided DDIM denoising step of the batch "
                  "(2 x batch network passes). GFLOP/s of the compiled case uses the eager peer's FLOPs."
                  + ("" if report["native_bf16"] else " No native bf16 here: the bf16 'ceiling' is an emulated "
                     "path, so fp32 cases exceed it many times over."))
    for name, r in report["cases"].items():
        if "compile_seconds_warm_cache" in r:
            cold = r.get("compile_seconds_cold_cache")
            console.print(f"{name}: compile time {cold:.0f} s cold (fresh process, empty inductor cache), "
                          f"{r['compile_seconds_warm_cache']:.0f} s warm" if cold is not None else
                          f"{name}: compile time {r['compile_seconds_warm_cache']:.0f} s")
    for key, value in report["other_time_ratios"].items():
        console.print(f"time ratio {key} = {value:.2f}")
    q = report["quality_guard"]
    flag = lambda bad: "[bold red]FLAGGED[/]" if bad else "ok"  # noqa: E731
    console.print(f"quality guard (eps relative error vs fp32, same weights and inputs, tolerance {q['tolerance']:.0e}): "
                  f"odmaug fast path ({q['odmaug_fast_precision']}) {q['odmaug_eps_rel_error']:.2e} "
                  f"(max per image {q['odmaug_eps_rel_error_max_per_image']:.2e}) {flag(q['flagged'])}; "
                  f"odmaug bf16 autocast {q['odmaug_bf16_eps_rel_error']:.2e} (max per image "
                  f"{q['odmaug_bf16_eps_rel_error_max_per_image']:.2e}) {flag(q['bf16_flagged'])}; "
                  f"peer pure bf16 {q['peer_pure_bf16_eps_rel_error']:.2e}"
                  + (f"; odmaug compiled vs eager {q['odmaug_compiled_eps_rel_error']:.2e} "
                     f"{flag(q['compiled_flagged'])}" if "odmaug_compiled_eps_rel_error" in q else "")
                  + (f" (samples {q['odmaug_compiled_sample_rel_error']:.2e})"
                     if "odmaug_compiled_sample_rel_error" in q else "")
                  + (f"; odmaug fast vs fp32 samples after {q['sample_steps']} DDIM steps {q['odmaug_sample_rel_error']:.2e}"
                     if "odmaug_sample_rel_error" in q else ""))
    lg = q.get("training_loss")
    if lg:
        parts = ", ".join(f"{name} {r['mean_last_half']:.4f} ({r['difference_to_fp32']:+.4f}) {flag(r['flagged'])}"
                          for name, r in lg["settings"].items())
        console.print(f"quality guard (training loss, {lg['network']}, mean of steps {lg['steps'] // 2 + 1}-{lg['steps']}, "
                      f"difference to fp32; noise = standard error {lg['noise_sem_fp32']:.4f}): {parts}")
    odm = report["odm_step_cost"]
    if odm:
        ratios = ", ".join(f"{k} = {v:.2f}" for k, v in odm["ratios"].items() if k.startswith("qs-"))
        console.print(f"ODM/DM step time ({odm['source']}, {odm['date']}): {ratios}")
    for note in report["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {args.out}")

    table = Table(title="targets (odmaug / peer throughput, fastest case of each side per round, median; bound = "
                        "the ratio if odmaug ran its FLOPs at 100% of this run's matmul ceiling)", title_justify="left")
    for col in ("target", "odmaug / peer", "required", "status", "bound at 100% ceiling", "odmaug case", "peer case"):
        table.add_column(col, justify="left" if col in ("target", "odmaug case", "peer case") else "right")
    for t in report["targets"]:
        if t["ratio"] is None:
            table.add_row(t["target"], "-", f"{t['required']:.1f}x", t["status"], "", "", "")
            continue
        status = "[green]met[/]" if t["status"] == "met" else f"[red]missed (needs {t['shortfall_factor']:.2f}x more)[/]"
        table.add_row(t["target"], f"{t['ratio']:.2f}x", f"{t['required']:.1f}x", status,
                      f"{t['bound_at_ceiling']:.2f}x ({t['bound_ceiling']})", t["best_odmaug_case"], t["best_peer_case"])
    console.print(table)


if __name__ == "__main__":
    main()
