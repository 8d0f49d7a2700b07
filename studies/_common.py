"""Helpers shared by the generator benchmarks (``generator_cost.py``, ``generator_speed.py``).

Measuring rules (docs/performance.md): time the compared cases round-robin in one process, take
medians, count FLOPs with ``FlopCounterMode`` and relate them to matmul ceilings measured in the
same run; peak memory comes from a fresh process per case (``/proc/self/status`` VmHWM).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "studies" / "results"


def matmul_ceilings(n: int = 2048, reps: int = 5, budget_seconds: float = 3.0) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` matmul in fp32 and bf16 (median of ``reps``).

    On CPUs without native bf16 a bf16 matmul can run at ~1 GFLOP/s (a 2048^2 one then takes
    ~20 s): the size grows from 256 to ``n`` only while ``reps`` products fit in ``budget_seconds``
    (the size used is returned as ``<dtype>_size``).
    """
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        size = 256
        while True:
            a = torch.randn(size, size, dtype=dtype)
            a @ a
            t0 = time.perf_counter()
            a @ a
            next_size_seconds = 8 * (time.perf_counter() - t0)  # a product of twice the size
            if size >= n or next_size_seconds * reps > budget_seconds:
                break
            size *= 2
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t0)
        out[name] = 2 * size**3 / statistics.median(times) / 1e9
        out[f"{name}_size"] = size
    return out


def best_ceilings(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The better of two ceiling measurements per dtype (the machine is shared: load only slows)."""
    return {key: max(before[key], after[key]) if not key.endswith("_size") else after[key] for key in before}


def flops_of(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def round_robin(units: dict[str, Callable[[], object]], rounds: int, log: bool = True) -> list[dict[str, float]]:
    """Time every unit once per round, for ``rounds`` rounds: ``[{name: seconds}]`` per round.

    The order rotates from round to round so that no case always runs right after the same
    neighbour (caches, thermal and load drift then hit every case alike).
    """
    names = list(units)
    out = []
    for r in range(rounds):
        if log:
            print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        shift = r % len(names) if names else 0
        this_round = {}
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            units[name]()
            this_round[name] = time.perf_counter() - t0
        out.append({name: this_round[name] for name in names})
    return out


def vm_hwm_mb() -> float:
    """This process's peak resident set size in MiB (Linux /proc/self/status VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_python(code: str, timeout: float | None = None, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh Python with ``studies/`` importable; its last stdout line.

    Raises:
        subprocess.TimeoutExpired: after ``timeout`` seconds (the child is killed).
        SystemExit: when the child fails (with the end of its stderr).
    """
    prelude = f"import sys; sys.path.insert(0, {str(ROOT / 'studies')!r}); "
    proc = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if proc.returncode != 0:
        raise SystemExit(f"subprocess failed: {proc.stderr[-1500:]}")
    return proc.stdout.strip().splitlines()[-1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record() -> dict:
    """CPU, cores, torch threads and version, bf16 feature flags, load average (for the JSON)."""
    import torch

    from odmaug.precision import cpu_bf16_flags

    return {"processor": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu_bf16_flags": list(cpu_bf16_flags()), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "load_average_at_end": os.getloadavg()}


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
