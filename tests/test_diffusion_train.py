"""Trainer: learning, checkpoint/resume equivalence, checkpoint errors, 2-process DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from odmaug.config import load_recipe
from odmaug.data import load_table, load_uint8, to_model_range
from odmaug.diffusion import load_generator, train_generator
from odmaug.diffusion.checkpoint import read_pointer
from odmaug.errors import OdmaugError
from odmaug.runs import create_run
from helpers import generator_state  # tests/helpers.py

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.yaml"


def smoke(*overrides: str):
    return load_recipe(SMOKE, ["train.sample_every=1000", "train.log_every=1", "train.grid_per_grade=2", *overrides])



def test_a_few_steps_reduce_the_loss_on_tiny_data(tmp_path):
    recipe = smoke("train.steps=40", "train.lr=3e-3", "train.ema_warmup=40", "train.precision=fp32")
    run = create_run(recipe, tmp_path)
    result = train_generator(run, recipe, show_progress=False)
    assert result.step == 40 and result.steps_this_call == 40 and result.precision == "fp32"
    loaded = load_generator(run.root)  # EMA = the weights themselves (warm-up copies them)
    assert loaded.step == 40 and len(loaded.checkpoint_id) == 16
    # DM loss on fixed draws; the untrained network (zero output layer) scores mean(noise^2) ~ 1
    table = load_table(recipe.data).split("train")
    x0 = to_model_range(load_uint8(table, 16))[:64].contiguous(memory_format=torch.channels_last)
    labels = torch.as_tensor(table.labels[:64].copy())
    g = torch.Generator().manual_seed(1)
    t = torch.randint(loaded.schedule.timesteps, (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        trained = (loaded.model(loaded.schedule.q_sample(x0, t, noise), t, labels) - noise).pow(2).mean()
    assert trained < 0.7 * noise.pow(2).mean(), trained
    logged = [r["l_dm"] for r in run.read_log("train")]
    assert len(logged) == 40 and sum(logged[-10:]) < sum(logged[:10])


def test_resume_gives_bitwise_the_same_weights(tmp_path):
    # dropout > 0 and the ordinal term on: the global RNG and the data stream must both be restored
    overrides = ["generator.dropout=0.1", "train.checkpoint_every=3", "train.ema_warmup=1"]
    straight = smoke("train.steps=6", *overrides)
    run_a = create_run(straight, tmp_path, "straight")
    train_generator(run_a, straight, show_progress=False)

    first = smoke("train.steps=3", *overrides)
    run_b = create_run(first, tmp_path, "resumed")
    train_generator(run_b, first, show_progress=False)
    second = smoke("train.steps=6", *overrides)
    result = train_generator(run_b, second, resume=True, show_progress=False)
    assert result.steps_this_call == 3 and result.step == 6

    a, b = generator_state(run_a.root), generator_state(run_b.root)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # nothing left to do: a no-op, not an error
    assert train_generator(run_b, second, resume=True, show_progress=False).steps_this_call == 0


def test_compiled_training_matches_eager_training(tmp_path):
    from odmaug.diffusion.sampling import can_compile

    if not can_compile(torch.device("cpu")):
        pytest.skip("no C++ compiler on PATH: torch.compile cannot build CPU kernels here")
    # dropout 0: compiled dropout draws its masks from another generator than eager dropout
    overrides = ["train.steps=3", "train.precision=fp32", "generator.dropout=0.0", "train.ema_warmup=1"]
    eager, compiled = smoke(*overrides), smoke(*overrides, "train.compile=true")
    run_e, run_c = create_run(eager, tmp_path, "eager"), create_run(compiled, tmp_path, "compiled")
    train_generator(run_e, eager, show_progress=False)
    assert train_generator(run_c, compiled, show_progress=False).step == 3
    # the checkpoint holds the plain network's names, not the compiled wrapper's
    assert generator_state(run_e.root).keys() == generator_state(run_c.root).keys()
    losses = []
    for run in (run_e, run_c):
        events = [json.loads(line) for line in (run.root / "log.jsonl").read_text().splitlines()]
        losses.append([e["l_dm"] for e in events if e["event"] == "train"])
    assert len(losses[0]) == 3
    # Step 1 starts from identical weights: the compiled loss is the eager one up to rounding.
    # (Later steps drift further: Adam's first updates are ~lr * sign(gradient), whatever its size.)
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-4)
    assert losses[1] == pytest.approx(losses[0], rel=5e-2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    recipe = smoke("train.steps=2", "train.precision=fp32", "train.ema_warmup=0")  # EMA differs from the weights
    run = create_run(recipe, tmp_path_factory.mktemp("runs"))
    train_generator(run, recipe, show_progress=False)
    return run


def _copy_run(run, tmp_path) -> Path:
    import shutil

    dst = tmp_path / run.root.name
    shutil.copytree(run.root, dst)
    return dst


def test_load_generator_contract(trained_run):
    loaded = load_generator(trained_run.root, device="cpu")
    assert not loaded.model.training and loaded.num_classes == 5 and loaded.image_size == 16
    assert loaded.weights_path.name == "ema.safetensors" and loaded.step == 2
    raw = load_generator(trained_run.root, use_ema=False)
    assert raw.weights_path.name == "model.safetensors" and raw.checkpoint_id != loaded.checkpoint_id
    assert loaded.recipe.generator == trained_run.recipe().generator


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    run = create_run(smoke(), tmp_path)
    with pytest.raises(OdmaugError, match="no generator checkpoint"):
        load_generator(run.root)
    with pytest.raises(OdmaugError, match="not an odmaug run folder|run folder not found"):
        load_generator(tmp_path / "nowhere")


def test_corrupt_checkpoint_is_a_clear_error(trained_run, tmp_path):
    root = _copy_run(trained_run, tmp_path)
    gen = root / "generator"
    ema = gen / read_pointer(gen)["folder"] / "ema.safetensors"
    data = bytearray(ema.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ema.write_bytes(bytes(data))
    with pytest.raises(OdmaugError, match="corrupt checkpoint file"):
        load_generator(root)
    # garbage whose hash the pointer vouches for still fails cleanly (safetensors refuses it)
    ema.write_bytes(b"not a safetensors file")
    pointer = json.loads((gen / "checkpoint.json").read_text())
    pointer["sha256"].pop("ema.safetensors")
    (gen / "checkpoint.json").write_text(json.dumps(pointer))
    with pytest.raises(OdmaugError, match="corrupt checkpoint file"):
        load_generator(root)
    (gen / "checkpoint.json").write_text("{ torn")
    with pytest.raises(OdmaugError, match="corrupt checkpoint pointer"):
        load_generator(root)


def _edit_recipe(root: Path, **changes) -> None:
    raw = yaml.safe_load((root / "config.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    (root / "config.yaml").write_text(yaml.safe_dump(raw))


def test_mismatched_checkpoint_is_a_clear_error(trained_run, tmp_path):
    wrong_grades = _copy_run(trained_run, tmp_path / "a")
    raw = yaml.safe_load((wrong_grades / "config.yaml").read_text())
    raw["data"]["num_classes"] = 4
    raw["data"]["synthetic"]["counts"] = [10, 10, 10, 10]
    (wrong_grades / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(OdmaugError, match="trained for 5 grades, but the recipe has 4"):
        load_generator(wrong_grades)
    wrong_shape = _copy_run(trained_run, tmp_path / "b")
    _edit_recipe(wrong_shape, generator__base_channels=24)
    with pytest.raises(OdmaugError, match="does not fit the recipe's generator"):
        load_generator(wrong_shape)
    wrong_depth = _copy_run(trained_run, tmp_path / "c")
    _edit_recipe(wrong_depth, generator__num_res_blocks=2)
    with pytest.raises(OdmaugError, match="does not fit the recipe's generator"):
        load_generator(wrong_depth)


def test_two_process_gloo_ddp_keeps_ranks_identical(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ODMAUG_RUNS_DIR": str(tmp_path)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "odmaug", "train-generator", "--recipe", str(SMOKE), "--device", "cpu",
        "--set", "train.steps=3", "--set", "train.sample_every=1000", "--set", "generator.dropout=0.1",
    ]
    # own process group, so that a hang cannot leave orphaned ranks behind
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("2-process training did not finish in 240 s")
    assert proc.returncode == 0, stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir() and p.name.endswith("-smoke")]
    assert len(runs) == 1  # only rank 0 created a run folder
    log = [json.loads(line) for line in (runs[0] / "log.jsonl").read_text().splitlines()]
    start = next(r for r in log if r["event"] == "train_start")
    assert start["world_size"] == 2 and start["backend"] == "gloo"
    assert start["global_batch"] == 8 and start["per_rank_batch"] == 4
    end = next(r for r in log if r["event"] == "train_end")
    digests = end["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert sum(r["event"] == "checkpoint" for r in log) >= 1  # written once per checkpoint, by rank 0
    state = generator_state(runs[0])
    assert "state/rng.data.0" in state and "state/rng.data.1" in state
    assert not torch.equal(state["state/rng.data.0"], state["state/rng.data.1"])  # independent streams


def test_the_global_batch_must_split_evenly_over_the_processes():
    from odmaug.diffusion.trainer import local_batch_size
    from odmaug.errors import OdmaugError

    assert local_batch_size(32, 2) == 16 and local_batch_size(32, 1) == 32
    with pytest.raises(OdmaugError, match="train.batch_size=33 must be divisible by the 2 processes"):
        local_batch_size(33, 2)
