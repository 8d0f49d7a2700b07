"""The checks around ``generator_speed.py``'s timings: the host's bf16 capability and matmul
ceilings, the quality guards (fast-path eps error, training-loss guard), the sampling scaling and
torch.profiler's top ops.
"""

from __future__ import annotations

import subprocess
import statistics
import sys
import time

import torch

from speed.cases import Case, bench_train_config, odmaug_generator
from speed.peer import GUIDANCE, NUM_CLASSES, peer_generator

EPS_TOLERANCE = 2e-2  # relative eps error of the fast path above which the quality guard flags it


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


def bf16_capability(device: torch.device) -> dict:
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
    if device.type == "cuda":
        out.update(cuda_device=torch.cuda.get_device_name(device), cuda_capability=list(torch.cuda.get_device_capability(device)),
                   cuda_bf16_supported=torch.cuda.is_bf16_supported(),
                   odmaug_fast_bf16_cuda=fast_bf16(device),
                   odmaug_auto_precision_cuda=precision_name(resolve_precision("auto", device)))
    return out


def device_matmul_ceilings(device: torch.device, n: int = 8192, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` matmul in fp32 (TF32 off) and bf16 on the CUDA device (median of ``reps``)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, dtype=dtype, device=device)
        a @ a
        torch.cuda.synchronize(device)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        out[name] = 2 * n**3 / statistics.median(times) / 1e9
        out[f"{name}_size"] = n
    return out


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
    (256, grades 0..4), trained ``steps`` steps of the trainer's DM loss and step unit (Adam 5e-4,
    grad clip, EMA) from the same weights and the same random stream in every setting. Reported: the mean loss of the last
    half of the steps per setting, the difference to fp32, and the noise it is judged against (the
    standard error of that mean over steps); a setting is flagged when it differs by more than
    3 standard errors.
    """
    from odmaug.config import DiffusionConfig, GeneratorConfig, OrdinalConfig
    from odmaug.data import to_model_range
    from odmaug.data.synthetic import draw_fundus
    from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator
    from odmaug.diffusion.trainer import generator_train_step
    from odmaug.precision import precision_name, resolve_precision

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
        unit = generator_train_step(model, bench_train_config().model_copy(update={"lr": 5e-4}), cpu, dtype)
        g = torch.Generator().manual_seed(0)
        losses = []
        for step in range(1, steps + 1):
            index = torch.randint(len(labels_all), (batch,), generator=g)
            x0 = to_model_range(images[index]).contiguous(memory_format=torch.channels_last)
            loss = unit(lambda: loss_fn(net, x0, labels_all[index], schedule, g)["loss"], step)
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


def sampling_scaling(sizes: list[int], steps: int) -> list[dict]:
    """Wall time of ``generate`` (fast path, batch 64, DDIM ``steps`` steps, guidance) for n images."""
    from odmaug.config import DiffusionConfig, SampleConfig
    from odmaug.diffusion import NoiseSchedule, generate

    model = odmaug_generator(32).to(memory_format=torch.channels_last).eval()
    schedule = NoiseSchedule.from_config(DiffusionConfig())
    warm_up = SampleConfig(steps=1, guidance_scale=GUIDANCE, precision="auto")
    settings = SampleConfig(sampler="ddim", steps=steps, guidance_scale=GUIDANCE, batch_size=64, precision="auto")
    generate(model, schedule, [0] * 4, list(range(4)), warm_up)  # warm-up
    out = []
    for n in sizes:
        print(f"sampling scaling: n = {n} ...", file=sys.stderr, flush=True)
        labels = [i % NUM_CLASSES for i in range(n)]
        t0 = time.perf_counter()
        generate(model, schedule, labels, list(range(n)), settings)
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
