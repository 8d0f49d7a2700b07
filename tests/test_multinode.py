"""Two nodes under torchrun equal one node of the same world size (issue 30 item 1).

Two ``torchrun --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d`` launchers on this machine play
two nodes (the file system stands in for a cluster's shared one): a generator trained there has
bitwise the weights and EMA of ``--standalone --nproc_per_node 2``, and ``augment`` writes the same
images. Ranks come from torchrun's rendezvous; odmaug reads them in one place (odmaug.distributed).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_same_state, generator_state

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
TRAIN = ["train-generator", "--recipe", str(SMOKE), "--device", "cpu", "--set", "train.steps=3",
         "--set", "train.sample_every=1000", "--set", "generator.dropout=0.1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(launchers: list[list[str]], args: list[str], runs: Path) -> list[str]:
    """Start every launcher with ``-m odmaug -- <args>`` at once (each its own process group), wait, and
    return what each printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ODMAUG_RUNS_DIR": str(runs)}
    runs.mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "odmaug", "--", *args],
                              env=env, cwd=runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for launcher in launchers]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"torchrun {args[0]} did not finish in 300 s")
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def _one_node() -> list[list[str]]:
    return [["--standalone", "--nproc_per_node", "2"]]


def _two_nodes() -> list[list[str]]:
    endpoint = f"127.0.0.1:{_free_port()}"
    return [["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
             "--rdzv_id", "odmaug-test"]] * 2


@pytest.mark.slow
def test_two_nodes_train_and_augment_as_one_node_of_two_processes(tmp_path):
    for name, launchers in (("one", _one_node()), ("two", _two_nodes())):
        _launch(launchers, TRAIN, tmp_path / name)
    [one] = [p for p in (tmp_path / "one").iterdir() if p.is_dir()]
    [two] = [p for p in (tmp_path / "two").iterdir() if p.is_dir()]  # one run folder, made by rank 0 alone
    assert_same_state(generator_state(one), generator_state(two))  # weights, EMA, optimizer, per-rank RNG

    images = {}
    for name, launchers, run in (("one", _one_node(), one), ("two", _two_nodes(), two)):
        out = tmp_path / f"aug-{name}"
        printed = _launch(launchers, ["augment", "--run", str(run), "--target-class", "3,4", "--n", "5", "--out",
                                      str(out), "--steps", "2", "--batch-size", "2", "--no-grid", "--device", "cpu"],
                          tmp_path / name)
        reports = [line for text in printed for line in text.splitlines() if re.match(r"generated \d+ images in", line)]
        assert len(reports) == 1  # one report per job, not one per rank
        images[name] = {p.relative_to(out): p.read_bytes() for p in sorted(out.glob("*/*.png"))}
    assert len(images["one"]) == 10 and images["one"] == images["two"]


BENCH = ["benchmark", "--recipe", str(SMOKE), "--device", "cpu", "--quiet", "--set", "train.steps=3",
         "--set", "classifier.epochs=1", "--set", "benchmark.arms=[real, dm]", "--set", "benchmark.seeds=[0, 1]",
         "--set", "benchmark.extractors=[domain]", "--set", "train.sample_every=1000"]


def _figures(results: dict) -> dict:
    """What a benchmark measured, without paths and times (which differ between two run folders)."""
    return {arm: {seed: {k: v for k, v in record.items() if k != "confusion"} for seed, record in data["seeds"].items()}
            for arm, data in results["arms"].items()}


@pytest.mark.slow
def test_two_nodes_benchmark_as_one_node_of_two_processes(tmp_path):
    import json

    found = {}
    for name, launchers in (("one", _one_node()), ("two", _two_nodes())):
        printed = _launch(launchers, BENCH, tmp_path / name)
        assert sum(text.count("report: ") for text in printed) == 1  # the results are printed once per job
        [bench] = [p for p in (tmp_path / name).iterdir() if p.name.startswith("0") and "benchmark" in p.name]
        found[name] = json.loads((bench / "results.json").read_text())
    assert _figures(found["one"]) == _figures(found["two"]) and set(found["one"]["arms"]) == {"real", "dm"}
