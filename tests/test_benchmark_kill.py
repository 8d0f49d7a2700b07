"""The benchmark, killed with SIGKILL mid-run, resumes to the results of an uninterrupted run (issue 15, item 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ARGS = ["--recipe", str(SMOKE), "--set", "classifier.epochs=2", "--set", "benchmark.arms=[real, dm]",
        "--set", "benchmark.seeds=[0, 1]", "--device", "cpu"]


def _benchmark(runs: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "odmaug", "benchmark", "--runs-dir", str(runs), *ARGS]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def _results(runs: Path) -> dict:
    bench = sorted(runs.glob("*-benchmark-smoke"))[-1]  # a rerun writes a new folder; stages come from the store
    arms = json.loads((bench / "results.json").read_text())["arms"]
    keys = ("qwk", "accuracy", "balanced_accuracy", "confusion")
    return {arm: {s: {k: r[k] for k in keys} for s, r in data["seeds"].items()} for arm, data in arms.items()}


@pytest.mark.slow
def test_sigkill_during_the_classifier_stage_then_rerun_gives_the_same_results(tmp_path):
    killed = _benchmark(tmp_path / "killed")
    seen = []
    deadline = time.monotonic() + 300
    for line in killed.stdout:  # kill once generators and synthesis are stored and classifiers run
        seen.append(line)
        if "classifier" in line and "dm" in line:
            break
        assert time.monotonic() < deadline, "".join(seen[-20:])
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "".join(seen[-20:])
    rerun = _benchmark(tmp_path / "killed")
    out_rerun, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out_rerun[-3000:]
    straight = _benchmark(tmp_path / "straight")
    out_straight, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out_straight[-3000:]
    assert _results(tmp_path / "killed") == _results(tmp_path / "straight")
    assert not list((tmp_path / "killed").rglob(".*.tmp"))  # no torn files left behind
