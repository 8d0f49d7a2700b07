"""The measured cases of ``generator_speed.py``: a network in a precision/layout setting and one
timed unit of work (a training step, or guided DDIM denoising steps of the batch).

Every training case, odmaug's and the diffusers peer's, times the generator trainer's own step
unit (``odmaug.diffusion.trainer.generator_train_step``: forward and loss under autocast,
backward, grad clip 1.0, Adam foreach, EMA), so the two sides differ only in network and loss.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time

import torch

from _common import flops_of, run_python, vm_hwm_mb
from speed.peer import GUIDANCE, NUM_CLASSES, peer_sample_work, peer_setup, peer_train_loss

CPU = torch.device("cpu")
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


def bench_train_config():
    """The trainer settings every timed training step uses: Adam lr 1e-4, grad clip 1.0, EMA 0.999."""
    from odmaug.config import TrainConfig

    return TrainConfig(lr=1e-4, ema_warmup=0)


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


def parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def synchronized(fn, device: torch.device):
    """``fn`` followed by a device synchronisation on CUDA (so wall-clock timing sees the kernels)."""
    if device.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return run


def odmaug_setup(setting: str, size: int, device: torch.device) -> dict:
    """What the trainer and ``generate`` do: channels_last model and batch, autocast of the precision."""
    from odmaug.precision import precision_name, resolve_precision

    dtype = resolve_precision("fp32" if setting == "fp32" else "auto", device)
    model = odmaug_generator(size).to(device=device, memory_format=torch.channels_last)
    detail = ("bf16 autocast" if dtype is not None else "fp32 (no native bf16)") + " + channels_last"
    return {"model": model, "weights_dtype": torch.float32, "autocast": dtype, "precision": precision_name(dtype),
            "detail": detail}


class Case:
    """One measured configuration: a network in a precision/layout setting and a timed unit of work.

    ``work()`` runs one unit: one training step, or ``sampling_steps`` guided DDIM steps of the batch.
    """

    def __init__(self, name: str, batch: int, sampling_steps: int, compile_precision: str = "bf16",
                 device: torch.device = CPU) -> None:
        side, kind, setting, size = CASES[name]
        self.name, self.side, self.kind, self.setting, self.batch = name, side, kind, setting, batch
        self.sampling_steps = sampling_steps if kind == "sample" else 1
        self.device = device
        # odmaug always runs channels_last (trainer, generate); the peer's fp32 eager cases are the default NCHW
        layout = torch.contiguous_format if (side == "diffusers" and setting.startswith("fp32")) else torch.channels_last
        g = torch.Generator().manual_seed(0)  # a CPU generator, as odmaug's trainer uses on every device
        x0 = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device).contiguous(memory_format=layout)
        labels = torch.arange(batch) % NUM_CLASSES  # CPU: what DiffusionLoss prefers
        net = odmaug_setup(setting, size, device) if side == "odmaug" else peer_setup(kind, setting, compile_precision, device)
        self.precision = net["precision"]
        text_key = ("odmaug-compiled" if side == "odmaug" and setting == "compiled" else
                    "compiled-train" if setting == "compiled" and kind == "train" else setting)
        self.setting_text = SETTING_TEXT[text_key].format(net["detail"])
        self.info = {"case": name, "side": side, "kind": kind, "setting": self.setting_text, "image_size": size,
                     "batch": batch, "precision": self.precision, "parameters": parameters(net["model"])}
        self.model = net["model"]
        self.compile_seconds = None
        self.first_unit_seconds = None  # set when the first (compiling) unit already ran under main's watchdog
        self.last = None
        if kind == "train":
            work = self._train_work(net, x0, labels, layout, g)
        else:
            work = self._sample_work(net, labels, layout, g, size)
        self.work = synchronized(work, device)
        self.times: list[float] = []

    def _train_work(self, net: dict, x0: torch.Tensor, labels: torch.Tensor, layout, g: torch.Generator):
        """One step of the trainer's unit: odmaug's DM (or, for "odm", ODM) loss, or the peer's loss."""
        from odmaug.config import DiffusionConfig, OrdinalConfig
        from odmaug.diffusion import DiffusionLoss, NoiseSchedule
        from odmaug.diffusion.trainer import generator_train_step

        model = net["model"].train()
        forward = torch.compile(model) if self.setting == "compiled" else model  # as the trainer's train.compile
        unit = generator_train_step(model, bench_train_config(), self.device, net["autocast"])
        if self.side == "odmaug":
            # DM (gamma = 0) in every odmaug case but "odm": the default ordinal settings (gamma 1, same-xt, random triplets)
            cfg = DiffusionConfig() if self.setting == "odm" else DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0))
            loss_fn, schedule = DiffusionLoss(cfg, NUM_CLASSES), NoiseSchedule.from_config(DiffusionConfig())
            if self.setting == "odm":
                self.info["ordinal"] = cfg.ordinal.model_dump()

            def loss():  # the trainer's loss (t, noise, label dropout, q_sample, MSE, ordinal term)
                return loss_fn(forward, x0, labels, schedule, g)["loss"]
        else:
            loss = peer_train_loss(forward, x0, labels, net["weights_dtype"], layout, g)
        steps = itertools.count(1)
        return lambda: unit(loss, next(steps))

    def _sample_work(self, net: dict, labels: torch.Tensor, layout, g: torch.Generator, size: int):
        """``sampling_steps`` guided DDIM steps: odmaug's ``sample``, or the diffusers pipeline loop."""
        from odmaug.precision import autocast

        model, device = net["model"].eval(), self.device
        noise = torch.randn(self.batch, 3, size, size, generator=g).to(device).contiguous(memory_format=layout)
        ctx = lambda: autocast(device, net["autocast"])  # noqa: E731
        if self.side == "diffusers":
            forward = torch.compile(model) if self.setting == "compiled" else model
            return peer_sample_work(forward, noise, labels, self.sampling_steps, net["weights_dtype"], ctx,
                                    lambda x: setattr(self, "last", x))
        from odmaug.config import DiffusionConfig, SampleConfig
        from odmaug.diffusion import NoiseSchedule, sample
        from odmaug.diffusion.sampling import compile_for_sampling

        schedule, labels_dev = NoiseSchedule.from_config(DiffusionConfig()), labels.to(device)
        if self.setting == "compiled":  # what generate / augment do with sample.compile (in place)
            compile_for_sampling(model, True, 0, device)
        # precision fp32: sample() adds no autocast of its own, the case's ctx() below decides
        settings = SampleConfig(sampler="ddim", steps=self.sampling_steps, guidance_scale=GUIDANCE, precision="fp32")

        def work():  # odmaug's sampler: cond + uncond in one batch of 2 x batch per step
            with ctx():
                self.last = sample(model, noise, labels_dev, schedule, settings)
            return self.last
        return work

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
def memory_main(name: str, batch: int, sampling_steps: int, compile_precision: str, device: str, units: int = 2) -> None:
    """Child process: build case ``name``, run ``units`` units, print JSON with peak RSS and unit times."""
    case = Case(name, batch, sampling_steps, compile_precision, torch.device(device))
    base = vm_hwm_mb()
    seconds = []
    for _ in range(units):
        t0 = time.perf_counter()
        case.work()
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"peak_rss_mb": vm_hwm_mb(), "rss_before_first_unit_mb": base, "unit_seconds": seconds}))


def memory_of(name: str, batch: int, sampling_steps: int, args, units: int = 2, timeout: float | None = None) -> dict:
    """Peak RSS of case ``name`` in a fresh process (same batch, steps, threads, compile precision, device)."""
    code = (f"import torch; torch.set_num_threads({args.threads}); import speed.cases as b; "
            f"b.memory_main({name!r}, {batch}, {sampling_steps}, {args.compile_precision!r}, {args.device!r}, {units})")
    return json.loads(run_python(code, timeout=timeout))
