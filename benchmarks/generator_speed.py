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
  odmaug's default fast path (DM loss: DiffusionLoss with gamma = 0), the same with the ODM loss
  (``DiffusionConfig()`` ordinal defaults: the ODM/DM step-time ratio of this host, paired within
  rounds), diffusers fp32 eager at its default dropout 0 and at odmaug's dropout 0.1, diffusers
  ``torch.compile`` (dropout 0.1, bf16 autocast where ``--compile-precision auto`` picks it, same
  optimizer); and, as before, odmaug's default fast path (what the trainer does by default: precision ``auto`` = bf16 autocast on
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
host's bf16 capability (lscpu flags, ``odmaug.precision`` detection, torch's CPU capability).

Compiles run under a watchdog (``--compile-timeout``, default 300 s): a compile that does not finish
is reported as COMPILE TIMEOUT (output and JSON ``compile_timed_out``) and the case is dropped.
``--device cuda`` runs the timing cases on a GPU (``benchmarks/gpu_speed.sh`` drives it).

Prints tables (the targets last), writes ``benchmarks/results/generator_speed.json`` (or ``--out``).
The machine is shared: absolute times are hints, ratios measured in one run are the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
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
DEVICE = torch.device("cpu")  # --device; set in main (and in the memory subprocesses)
PEER_DROPOUT = 0.1  # odmaug's default GeneratorConfig dropout; the peer cases marked "dropout" use it too
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
    "odmaug-train-odm": ("odmaug", "train", "odm", 32),
    "odmaug-train-fp32": ("odmaug", "train", "fp32", 32),
    "odmaug-train-compiled": ("odmaug", "train", "compiled", 32),
    "peer-train-fp32": ("diffusers", "train", "fp32", 32),
    "peer-train-fp32-dropout": ("diffusers", "train", "fp32-dropout", 32),
    "peer-train-bf16-autocast-cl": ("diffusers", "train", "bf16-autocast-cl", 32),
    "peer-train-bf16-cl": ("diffusers", "train", "bf16-cl", 32),
    "peer-train-compiled": ("diffusers", "train", "compiled", 32),
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
    "fp32-dropout": "fp32 eager, dropout 0.1 (as odmaug)",
    "odm": "ODM loss (DiffusionConfig() ordinal defaults), {}",
    "compiled-train": "torch.compile + {} + channels_last, dropout 0.1 (as odmaug)",
    "bf16-autocast-cl": "bf16 autocast + channels_last, eager",
    "bf16-cl": "pure bf16 + channels_last, eager",
    "compiled": "torch.compile + {} + channels_last",
    "odmaug-compiled": "{} + torch.compile",
}
SLOW_BF16_CASES = ("peer-train-bf16-autocast-cl", "peer-train-bf16-cl", "peer-sample-bf16-cl")
PEER_EAGER_TRAIN = ("peer-train-fp32", "peer-train-fp32-dropout", "peer-train-bf16-autocast-cl", "peer-train-bf16-cl")
# (label, odmaug case(s), peer case(s), required ratio of peer time / odmaug time); of several cases
# on a side, each round takes the fastest. odmaug's cases are its default (precision auto, eager) and
# its opt-in compiled settings (train.compile, sample.compile).
ODMAUG_TRAIN = ("odmaug-train-fast", "odmaug-train-compiled")
ODMAUG_SAMPLE = ("odmaug-sample-fast", "odmaug-sample-compiled")
TARGETS = [
    ("training >= 3x diffusers fp32 eager", ODMAUG_TRAIN, ("peer-train-fp32",), 3.0),
    ("training >= 2x diffusers best eager", ODMAUG_TRAIN, PEER_EAGER_TRAIN, 2.0),
    ("training >= 1x diffusers compiled (reference, not an issue target)", ODMAUG_TRAIN, ("peer-train-compiled",), 1.0),
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


def peer_generator(dropout: float = 0.0) -> torch.nn.Module:
    """The diffusers UNet2DModel peer (seed 0; diffusers' default dropout is 0)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(**PEER_KWARGS, dropout=dropout)


def synchronized(fn):
    """``fn`` followed by a device synchronisation on CUDA (so wall-clock timing sees the kernels)."""
    if DEVICE.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(DEVICE)
        return out
    return run


@contextlib.contextmanager
def deadline(seconds: float | None, what: str):
    """Raise TimeoutError in the main thread when the block runs past ``seconds`` (SIGALRM watchdog).

    Yields a dict whose ``expired`` turns True when the watchdog fired (torch.compile may wrap the
    TimeoutError in its own exception type, so callers check the flag, not the type).
    """
    state = {"expired": False}
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield state
        return

    def expire(signum, frame):
        state["expired"] = True
        raise TimeoutError(f"{what} did not finish within {seconds:.0f} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield state
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def lscpu_flags() -> list[str] | None:
    """The CPU flags ``lscpu`` reports (None when lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        if line.startswith("Flags:"):
            return line.split(":", 1)[1].split()
    return []


def bf16_capability() -> dict:
    """The host's bf16 capability: lscpu flags, odmaug.precision's detection, torch's CPU capability (and CUDA's)."""
    from odmaug.precision import cpu_bf16_flags, fast_bf16, precision_name, resolve_precision

    flags = lscpu_flags()
    wanted = ("amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx512_vnni", "avx2", "fma")
    out = {"lscpu_flags": None if flags is None else {f: f in flags for f in wanted},
           "odmaug_cpu_bf16_flags": list(cpu_bf16_flags()),
           "odmaug_fast_bf16_cpu": fast_bf16(torch.device("cpu")),
           "odmaug_auto_precision_cpu": precision_name(resolve_precision("auto", torch.device("cpu"))),
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "mkldnn_bf16_supported": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: None)())}
    if DEVICE.type == "cuda":
        out.update(cuda_device=torch.cuda.get_device_name(DEVICE), cuda_capability=list(torch.cuda.get_device_capability(DEVICE)),
                   cuda_bf16_supported=torch.cuda.is_bf16_supported(),
                   odmaug_fast_bf16_cuda=fast_bf16(DEVICE),
                   odmaug_auto_precision_cuda=precision_name(resolve_precision("auto", DEVICE)))
    return out


def device_matmul_ceilings(n: int = 8192, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` matmul in fp32 (TF32 off) and bf16 on the CUDA device (median of ``reps``)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, dtype=dtype, device=DEVICE)
        a @ a
        torch.cuda.synchronize(DEVICE)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            torch.cuda.synchronize(DEVICE)
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
        out[f"{name}_size"] = n
    return out


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
        device = DEVICE
        cl = torch.channels_last
        # odmaug always runs channels_last (trainer, generate); the peer's fp32 eager cases are the default NCHW
        fmt = torch.contiguous_format if (side == "diffusers" and setting.startswith("fp32")) else cl
        g = torch.Generator().manual_seed(0)  # a CPU generator, as odmaug's trainer uses on every device
        x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device).contiguous(memory_format=fmt)
        labels = torch.arange(batch) % NUM_CLASSES  # CPU: what DiffusionLoss prefers
        labels_dev = labels.to(device)
        if side == "odmaug":
            # what the trainer and ``generate`` do: channels_last model and batch, autocast of the precision
            dtype = resolve_precision("fp32" if setting == "fp32" else "auto", device)
            model = odmaug_generator(size).to(device=device, memory_format=cl)
            ctx = lambda: autocast(device, dtype)  # noqa: E731
            self.precision = precision_name(dtype)
            mdtype = torch.float32
            detail = ("bf16 autocast" if dtype is not None else "fp32 (no native bf16)") + " + channels_last"
        else:
            dropout = PEER_DROPOUT if (setting == "fp32-dropout" or (setting == "compiled" and kind == "train")) else 0.0
            model = peer_generator(dropout).to(device)
            if setting == "compiled":
                self.precision = compile_precision
            else:
                self.precision = "fp32" if setting.startswith("fp32") else "bf16"
            mdtype = torch.bfloat16 if setting == "bf16-cl" else torch.float32
            if fmt is cl:
                model = model.to(dtype=mdtype, memory_format=cl)
            use_autocast = "autocast" in setting or (setting == "compiled" and compile_precision == "bf16")
            autocast_dtype = torch.bfloat16 if use_autocast else None
            ctx = lambda: autocast(device, autocast_dtype)  # noqa: E731
            detail = "bf16 autocast" if use_autocast else "fp32"
        text_key = ("odmaug-compiled" if side == "odmaug" and setting == "compiled" else
                    "compiled-train" if setting == "compiled" and kind == "train" else setting)
        self.setting_text = SETTING_TEXT[text_key].format(detail)
        self.info = {"case": name, "side": side, "kind": kind, "setting": self.setting_text, "image_size": size,
                     "batch": batch, "precision": self.precision, "parameters": parameters(model)}
        self.model = model
        self.compile_seconds = None
        self.first_unit_seconds = None  # set when the first (compiling) unit already ran under main's watchdog
        self.last = None
        if kind == "train":
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4, foreach=True)
            ema = [p.detach().clone() for p in model.parameters()]
            if side == "odmaug":
                # DM (gamma = 0) in every odmaug case but "odm": the default ordinal settings (gamma 1, same-xt, random triplets)
                cfg = DiffusionConfig() if setting == "odm" else DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0))
                loss_fn = DiffusionLoss(cfg, NUM_CLASSES)
                if setting == "odm":
                    self.info["ordinal"] = cfg.ordinal.model_dump()
                schedule = NoiseSchedule.from_config(DiffusionConfig())
                net = torch.compile(model) if setting == "compiled" else model  # as the trainer's train.compile

                def loss_of_batch():  # the trainer's DM loss (t, noise, label dropout, q_sample, MSE)
                    with ctx():
                        return loss_fn(net, x0, labels, schedule, g)["loss"]
            else:
                from diffusers import DDPMScheduler

                scheduler = DDPMScheduler(num_train_timesteps=1000)
                net = torch.compile(model) if setting == "compiled" else model  # same optimizer on `model`'s parameters

                def loss_of_batch():  # diffusers' training-script loss with label dropout for guidance
                    noise = torch.randn(x0.shape, generator=g).to(device).contiguous(memory_format=fmt)
                    t = torch.randint(1000, (batch,), generator=g).to(device)
                    dropped = torch.rand(batch, generator=g) < 0.1
                    cond = torch.where(dropped, torch.full_like(labels, NUM_CLASSES), labels).to(device)
                    xt = scheduler.add_noise(x0, noise, t)
                    with ctx():
                        pred = net(xt.to(mdtype), t, class_labels=cond).sample
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
            noise = torch.randn(batch, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
            if side == "odmaug":
                from odmaug.diffusion import sample
                from odmaug.diffusion.sampling import compile_for_sampling

                schedule = NoiseSchedule.from_config(DiffusionConfig())
                if setting == "compiled":  # what generate / augment do with sample.compile (in place)
                    compile_for_sampling(model, True, 0, device)

                def work():  # odmaug's sampler: cond + uncond in one batch of 2 x batch per step
                    with ctx():
                        self.last = sample(model, noise, labels_dev, schedule, sampler="ddim", steps=self.sampling_steps,
                                           guidance_scale=GUIDANCE)
                    return self.last
            else:
                from diffusers import DDIMScheduler

                scheduler = DDIMScheduler(num_train_timesteps=1000)
                scheduler.set_timesteps(self.sampling_steps)
                net = torch.compile(model) if setting == "compiled" else model
                both = torch.cat([labels, torch.full_like(labels, NUM_CLASSES)]).to(device)

                @torch.no_grad()
                def work():  # the pipeline loop: cond + uncond in one batch, guidance, scheduler step
                    x = noise
                    for t in scheduler.timesteps:
                        tt = torch.full((2 * batch,), int(t), dtype=torch.long, device=device)
                        with ctx():
                            eps = net(torch.cat([x, x]).to(mdtype), tt, class_labels=both).sample.float()
                        eps_c, eps_u = eps.chunk(2)
                        x = scheduler.step(eps_u + GUIDANCE * (eps_c - eps_u), t, x).prev_sample
                    self.last = x
                    return x
        self.work = synchronized(work)
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
            if self.first_unit_seconds is not None:  # the compiling unit ran before: ``first`` is a compiled unit
                self.compile_seconds = self.first_unit_seconds - first
            else:
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
            f"b.DEVICE = torch.device({str(DEVICE)!r}); b.memory_main({name!r}, {batch}, {sampling_steps}, {args.compile_precision!r}, {units})")
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


def odm_step_cost(cases: dict, per_round: list[dict]) -> dict | None:
    """The ODM/DM training-step time ratio measured in this run: ``odmaug-train-odm`` / ``odmaug-train-fast``.

    Both are odmaug's 8.95 M default network at 32 px, batch ``--batch``, in the precision ``auto``
    picks on this device (bf16 autocast with native bf16), channels_last, identical optimizer code;
    DM is ``DiffusionLoss`` with gamma = 0, ODM the ``DiffusionConfig()`` ordinal defaults. Paired
    within the timing rounds (median, min, max over rounds).
    """
    dm, odm = cases.get("odmaug-train-fast"), cases.get("odmaug-train-odm")
    if dm is None or odm is None or not per_round:
        return None
    ratios = [r["odmaug-train-odm"] / r["odmaug-train-fast"] for r in per_round]
    return {"source": "measured in this run (paired within rounds)", "dm_case": "odmaug-train-fast",
            "odm_case": "odmaug-train-odm", "precision": dm.precision, "device": str(DEVICE),
            "ordinal": odm.info.get("ordinal"), "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "per_round": ratios, "rounds": len(ratios),
            "flops_ratio": odm.info["flops_per_unit"] / dm.info["flops_per_unit"],
            "note": "one counted ODM step's FLOPs vs one DM step's (the number of ordinal evaluations is random "
                    "per step); generator_cost.py measures the quickstart-size network"}


# ----------------------------------------------------------------------------- main
def main() -> None:
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
    parser.add_argument("--compile-timeout", type=float, default=300.0,
                        help="give up on a compiled case (odmaug's or the peer's, cold or warm) whose compile and first "
                             "unit take longer than this many seconds; it is then reported as timed out (default 300)")
    parser.add_argument("--no-cold-compile", action="store_true",
                        help="skip the fresh-process cold compile of the diffusers sampling peer (its compile is then "
                             "timed warm-cache only, in the main process; saves one compile)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the networks run (default cpu); cuda: the timing cases only (no memory, profile, "
                             "quality or loss guard, scaling: they are CPU measurements)")
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
    global DEVICE
    DEVICE = torch.device(args.device)
    notes = []
    if DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device available")
        if not args.no_memory or not args.no_profile or args.loss_steps:
            notes.append("--device cuda: peak RSS, profiles, the quality/loss guards and the sampling scaling are "
                         "CPU measurements and were skipped")
        args.no_memory, args.no_profile, args.loss_steps, args.scaling_sizes = True, True, 0, []
    torch.set_num_threads(args.threads)
    from odmaug.precision import fast_bf16
    native_bf16 = fast_bf16(DEVICE)
    if args.compile_precision == "auto":
        args.compile_precision = "bf16" if native_bf16 else "fp32"
    slow_mode = args.slow_bf16 if args.slow_bf16 != "auto" else ("full" if native_bf16 else "once")
    rounds = args.rounds or (3 if args.quick else 7)
    sizes = args.scaling_sizes if args.scaling_sizes is not None else ([16, 64] if args.quick else [64, 256, 1024])
    names = args.only or list(CASES)
    if not native_bf16 and DEVICE.type == "cpu":
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
    ceilings = device_matmul_ceilings() if DEVICE.type == "cuda" else matmul_ceilings()
    compiled_cold = None
    timed_out: list[str] = []
    if "peer-sample-compiled" in names and args.no_cold_compile:
        notes.append("--no-cold-compile: peer-sample-compiled's cold compile (fresh process) was not measured")
    elif "peer-sample-compiled" in names:
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
            timed_out.append("peer-sample-compiled")
            notes.append(f"COMPILE TIMEOUT: peer-sample-compiled skipped: its cold compile (fresh process) did not "
                         f"finish within --compile-timeout {args.compile_timeout:.0f} s")

    cases: dict[str, Case] = {}
    for name in sorted(names, key=lambda n: n in once or CASES[n][2] == "compiled"):  # the eager cases first
        print(f"building and warming up {name} ...", file=sys.stderr, flush=True)
        side, kind = CASES[name][:2]
        if CASES[name][2] == "compiled":  # a watchdog: report a compile that does not finish instead of hanging
            t0 = time.perf_counter()
            try:
                with deadline(args.compile_timeout, f"compile of {name}") as state:
                    case = Case(name, args.batch, args.sampling_steps, args.compile_precision)
                    t1 = time.perf_counter()
                    case.work()  # compile + first unit, under the watchdog
                    case.first_unit_seconds = time.perf_counter() - t1
            except Exception:
                if not state["expired"]:
                    raise
                print(f"COMPILE TIMEOUT: {name} ({args.compile_timeout:.0f} s): skipped", file=sys.stderr, flush=True)
                timed_out.append(name)
                notes.append(f"COMPILE TIMEOUT: {name} skipped: its compile and first unit did not finish within "
                             f"--compile-timeout {args.compile_timeout:.0f} s (stopped after "
                             f"{time.perf_counter() - t0:.0f} s)")
                torch._dynamo.reset()
                continue
            cases[name] = case
        else:
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
    names = [n for n in names if n in cases]
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
    ceilings = best_ceilings(ceilings, device_matmul_ceilings() if DEVICE.type == "cuda" else matmul_ceilings())
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
        # the same bound at the fp32 ceiling (what an AVX2-only host, with fp32 as its fast path, is held to)
        floor_fp32 = flops_per_step / (ceilings["fp32"] * 1e9)
        bound_fp32 = statistics.median(min(unit_time(r, p) for p in have) / floor_fp32 for r in per_round)
        ratio = statistics.median(ratios)
        targets.append({"target": label, "odmaug_cases": ours, "best_odmaug_case": best_ours, "peer_cases": have,
                        "best_peer_case": best, "required": required, "ratio": ratio, "per_round": ratios,
                        "status": "met" if ratio >= required else "missed",
                        "shortfall_factor": None if ratio >= required else required / ratio,
                        "bound_at_ceiling": bound, "bound_ceiling": ceiling_name, "bound_at_fp32_ceiling": bound_fp32,
                        "ratio_min": min(ratios), "ratio_max": max(ratios),
                        "reachable_at_equal_flops": bound >= required})
    extra_ratios, extra_spread = {}, {}
    for a, b in (("odmaug-train-odm", "odmaug-train-fast"), ("peer-train-fp32", "odmaug-train-fast"),
                 ("peer-train-fp32-dropout", "odmaug-train-fast"), ("peer-train-compiled", "odmaug-train-fast"),
                 ("peer-train-compiled", "odmaug-train-compiled"), ("peer-train-fp32-dropout", "peer-train-fp32"),
                 ("peer-train-compiled", "peer-train-fp32-dropout"), ("odmaug-train-fast-64px", "odmaug-train-fast"), ("odmaug-train-fp32", "odmaug-train-fast"),
                 ("odmaug-sample-fp32", "odmaug-sample-fast"), ("peer-train-fp32", "odmaug-train-fp32"),
        ("odmaug-train-fast", "odmaug-train-compiled"), ("odmaug-sample-fast", "odmaug-sample-compiled"),
                 ("peer-sample-fp32", "odmaug-sample-fp32"), ("peer-train-bf16-cl", "peer-train-fp32"),
                 ("peer-train-bf16-autocast-cl", "peer-train-fp32"), ("peer-sample-bf16-cl", "peer-sample-fp32"),
                 ("peer-sample-compiled", "peer-sample-fp32")):
        if a in cases and b in cases:
            each = [unit_time(r, a) / unit_time(r, b) for r in per_round]
            extra_ratios[f"{a} / {b} (time)"] = statistics.median(each)
            extra_spread[f"{a} / {b} (time)"] = {"min": min(each), "max": max(each), "per_round": each}

    quality = {}
    if DEVICE.type == "cpu":
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
            if name == "peer-sample-compiled" and compiled_cold is not None:
                mem = compiled_cold
            else:
                print(f"peak memory of {name} ...", file=sys.stderr, flush=True)
                try:  # a compiled case compiles again in the fresh process: under the same time limit
                    mem = memory_of(name, case.batch, case.sampling_steps, args, units=1 if name in once else 2,
                                    timeout=args.compile_timeout if CASES[name][2] == "compiled" else None)
                except subprocess.TimeoutExpired:
                    notes.append(f"COMPILE TIMEOUT: peak memory of {name} not measured: its fresh-process compile "
                                 f"took over {args.compile_timeout:.0f} s")
                    continue
            results[name]["peak_rss_mb"] = mem["peak_rss_mb"]
            results[name]["rss_before_first_unit_mb"] = mem["rss_before_first_unit_mb"]

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": ("python benchmarks/generator_speed.py " + " ".join(sys.argv[1:])).strip(),
        "machine": machine_record(),
        "device": str(DEVICE),
        "bf16_capability": bf16_capability(),
        "native_bf16": native_bf16,
        "note": "shared machine: absolute times are hints; ratios are paired within rounds. Identical optimizer "
                "code (Adam foreach, grad clip, EMA lerp) on both sides; odmaug keeps its default dropout 0.1; the "
                "diffusers cases run its default dropout 0 except peer-train-fp32-dropout and peer-train-compiled "
                "(dropout 0.1, as odmaug).",
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
        "other_time_ratio_spread": extra_spread,
        "compile_timeout_seconds": args.compile_timeout,
        "compile_timed_out": timed_out,
        "quality_guard": quality,
        "sampling_scaling": scaling,
        "profiles_fast_path": profiles,
        "odm_step_cost": odm_step_cost(cases, per_round),
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
        spread = report.get("other_time_ratio_spread", {}).get(key)
        console.print(f"time ratio {key} = {value:.2f}"
                      + (f" (rounds {spread['min']:.2f}..{spread['max']:.2f})" if spread else ""))
    cap = report.get("bf16_capability", {})
    console.print(f"bf16 capability: lscpu {cap.get('lscpu_flags')}, odmaug cpu_bf16_flags {cap.get('odmaug_cpu_bf16_flags')}, "
                  f"fast_bf16(cpu) {cap.get('odmaug_fast_bf16_cpu')}, torch CPU capability {cap.get('torch_cpu_capability')}"
                  + (f", CUDA {cap['cuda_device']} bf16 {cap['cuda_bf16_supported']}" if "cuda_device" in cap else ""))
    for name in report.get("compile_timed_out", []):
        console.print(f"[bold red]COMPILE TIMEOUT[/]: {name} (over {report['compile_timeout_seconds']:.0f} s), not timed")
    q = report["quality_guard"] or None
    if q is None:
        console.print("quality guard: skipped (CPU-only)")
    flag = lambda bad: "[bold red]FLAGGED[/]" if bad else "ok"  # noqa: E731
    if q is not None:
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
    lg = (q or {}).get("training_loss")
    if lg:
        parts = ", ".join(f"{name} {r['mean_last_half']:.4f} ({r['difference_to_fp32']:+.4f}) {flag(r['flagged'])}"
                          for name, r in lg["settings"].items())
        console.print(f"quality guard (training loss, {lg['network']}, mean of steps {lg['steps'] // 2 + 1}-{lg['steps']}, "
                      f"difference to fp32; noise = standard error {lg['noise_sem_fp32']:.4f}): {parts}")
    odm = report["odm_step_cost"]
    if odm:
        console.print(f"ODM/DM training-step time, measured here ({odm['device']}, {odm['precision']}, {odm['rounds']} "
                      f"paired rounds): {odm['ratio_median']:.2f} (rounds {odm['ratio_min']:.2f}..{odm['ratio_max']:.2f}); "
                      f"FLOPs ratio {odm['flops_ratio']:.2f}")
    else:
        console.print("ODM/DM step time: not measured (needs odmaug-train-fast and odmaug-train-odm)")
    for note in report["notes"]:
        console.print(f"note: {note}")
    console.print(f"wrote {args.out}")

    table = Table(title="targets (odmaug / peer throughput, fastest case of each side per round, median; bound = "
                        "the ratio if odmaug ran its FLOPs at 100% of this run's matmul ceiling)", title_justify="left")
    for col in ("target", "odmaug / peer", "rounds min..max", "required", "status", "bound at 100% ceiling",
                "bound at fp32 (AVX2) ceiling", "odmaug case", "peer case"):
        table.add_column(col, justify="left" if col in ("target", "odmaug case", "peer case") else "right")
    for t in report["targets"]:
        if t["ratio"] is None:
            table.add_row(t["target"], "-", "", f"{t['required']:.1f}x", t["status"], "", "", "", "")
            continue
        status = "[green]met[/]" if t["status"] == "met" else f"[red]missed (needs {t['shortfall_factor']:.2f}x more)[/]"
        table.add_row(t["target"], f"{t['ratio']:.2f}x", f"{t['ratio_min']:.2f}..{t['ratio_max']:.2f}",
                      f"{t['required']:.1f}x", status, f"{t['bound_at_ceiling']:.2f}x ({t['bound_ceiling']})",
                      f"{t['bound_at_fp32_ceiling']:.2f}x", t["best_odmaug_case"], t["best_peer_case"])
    console.print(table)


if __name__ == "__main__":
    main()
