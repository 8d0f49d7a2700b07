"""train.lr_schedule (against diffusers and EDM2) and train.ema_decays (hand-rolled averages), their
resume exactness, validation, unchanged store keys at the defaults, and old checkpoints still loading."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from safetensors.torch import load_file

from odmaug.config import dump_recipe, load_recipe, recipe_from_dict
from odmaug.diffusion import load_generator, train_generator
from odmaug.diffusion.checkpoint import read_pointer
from odmaug.diffusion.lr_schedule import learning_rate
from odmaug.errors import OdmaugError
from odmaug.runs import create_run
from odmaug.train_state import TrainingState, load_state_file, load_state_folder, save_state_file, save_state_folder
from odmaug.train_step import ema_decay_at, ramp_end, same_emas_note

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
NEW_TRAIN_OPTIONS = ("lr_schedule", "lr_decay_steps", "lr_min_ratio", "ema_decays")


def smoke(*overrides: str):
    return load_recipe(SMOKE, ["train.sample_every=1000", "train.log_every=1", "train.precision=fp32", *overrides])


def train_cfg(*overrides: str):
    return load_recipe(None, [f"train.{o}" for o in overrides]).train


def diffusers_lrs(make, steps: int, lr: float) -> list[float]:
    """The lr diffusers' scheduler reports after 1..steps scheduler steps (odmaug's steps 1..steps)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, out = make(optimizer), []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        out.append(scheduler.get_last_lr()[0])
    return out


@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_schedules_match_diffusers_and_edm2(warmup):
    ours = [learning_rate(s, train_cfg("lr=3e-4", f"lr_warmup={warmup}")) for s in range(1, 41)]
    assert ours == pytest.approx(diffusers_lrs(lambda o: get_constant_schedule_with_warmup(o, warmup), 40, 3e-4),
                                 abs=1e-9, rel=0)
    cosine = train_cfg("lr=3e-4", f"lr_warmup={warmup}", "lr_schedule=cosine", "lr_decay_steps=30")
    reference = diffusers_lrs(lambda o: get_cosine_schedule_with_warmup(o, warmup, 30), 30, 3e-4)
    assert [learning_rate(s, cosine) for s in range(1, 31)] == pytest.approx(reference, abs=1e-9, rel=0)
    assert learning_rate(30, cosine) == 0.0 and all(learning_rate(s, cosine) == 0.0 for s in (31, 60, 10**6))
    floor = train_cfg("lr=3e-4", f"lr_warmup={warmup}", "lr_schedule=cosine", "lr_decay_steps=30",
                      "lr_min_ratio=0.1")
    scale = [(learning_rate(s, floor) - 3e-5) / (3e-4 - 3e-5) for s in range(1, 61)]
    plain = [learning_rate(s, cosine) / 3e-4 for s in range(1, 61)]
    assert scale[warmup:] == pytest.approx(plain[warmup:], abs=1e-9)  # r + (1 - r) * the r = 0 curve
    # EDM2's learning_rate_schedule, transcribed: counted in images at batch b; t_ref in batches
    b, t_ref = 16, 10
    for cfg, ref in ((train_cfg("lr=1e-2", f"lr_warmup={warmup}", "lr_schedule=inverse-sqrt", f"lr_decay_steps={t_ref}"), t_ref),
                     (train_cfg("lr=1e-2", f"lr_warmup={max(warmup, 1)}", "lr_schedule=inverse-sqrt"), max(warmup, 1))):
        for s in range(1, 200):
            nimg, edm2 = s * b, 1e-2 / math.sqrt(max(s * b / (ref * b), 1))
            if cfg.lr_warmup > 0:
                edm2 *= min(nimg / (cfg.lr_warmup * b), 1)
            assert learning_rate(s, cfg) == pytest.approx(edm2, abs=1e-12, rel=1e-12), s


def test_the_default_schedule_is_the_old_formula_bit_for_bit():
    cfg = train_cfg("lr=5e-4", "lr_warmup=100")
    old = [cfg.lr * s / cfg.lr_warmup if s <= cfg.lr_warmup else cfg.lr for s in range(1, 300)]
    assert [learning_rate(s, cfg) for s in range(1, 300)] == old


@pytest.mark.parametrize("overrides, message", [
    (["train.lr_schedule=linear"], "lr_schedule"),
    (["train.lr_schedule=cosine"], "needs train.lr_decay_steps"),
    (["train.lr_schedule=cosine", "train.lr_warmup=10", "train.lr_decay_steps=10"], "above train.lr_warmup"),
    (["train.lr_schedule=cosine", "train.lr_decay_steps=10", "train.lr_min_ratio=-0.1"], "lr_min_ratio"),
    (["train.lr_schedule=cosine", "train.lr_decay_steps=10", "train.lr_min_ratio=1.5"], "lr_min_ratio"),
    (["train.lr_schedule=inverse-sqrt"], "needs train.lr_warmup or train.lr_decay_steps"),
    (["train.lr_decay_steps=100"], "does nothing"),
    (["train.lr_min_ratio=0.1"], "cosine only"),
    (["train.ema_decays=[1.0]"], "ema_decays"),
    (["train.ema_decays=[-0.5]"], "ema_decays"),
    (["train.ema_decays=[0.9,0.9]"], "distinct"),
    (["train.ema_decay=0.99", "train.ema_decays=[0.99]"], "differ from train.ema_decay"),
])
def test_bad_settings_are_refused_by_the_recipe(overrides, message):
    with pytest.raises(OdmaugError, match=message):
        load_recipe(SMOKE, overrides)


def test_defaults_keep_dumps_and_store_keys():
    from odmaug.benchmark.store import generator_key

    recipe = smoke()
    assert not set(NEW_TRAIN_OPTIONS) & set(recipe.to_dict()["train"])  # dumps (and so keys) as before
    for setting in (["train.lr_schedule=cosine", "train.lr_decay_steps=4"], ["train.ema_decays=[0.9]"]):
        changed = smoke(*setting)
        assert generator_key(changed) != generator_key(recipe)
        assert recipe_from_dict(yaml.safe_load(dump_recipe(changed))) == changed  # a set option is dumped


def _final_state(root: Path) -> dict[str, torch.Tensor]:
    gen = root / "generator"
    folder = gen / read_pointer(gen)["folder"]
    return {f"{p.name}/{k}": v for p in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(p)).items()}


def test_resume_continues_the_schedule_and_the_emas_exactly(tmp_path):
    # cosine ends at step 5, between the stop (3) and the end (7): the continued run runs on at the floor
    overrides = ["generator.dropout=0.1", "train.checkpoint_every=3", "train.ema_warmup=1", "train.lr=3e-3",
                 "train.lr_warmup=2", "train.lr_schedule=cosine", "train.lr_decay_steps=5", "train.lr_min_ratio=0.1",
                 "train.ema_decays=[0.5,0.9]"]
    straight = smoke("train.steps=7", *overrides)
    run_a = create_run(straight, tmp_path, "straight")
    train_generator(run_a, straight, show_progress=False)
    run_b = create_run(smoke("train.steps=3", *overrides), tmp_path, "resumed")
    train_generator(run_b, smoke("train.steps=3", *overrides), show_progress=False)
    assert train_generator(run_b, straight, resume=True, show_progress=False).steps_this_call == 4
    lrs = [[r["lr"] for r in run.read_log("train")] for run in (run_a, run_b)]
    assert lrs[0] == lrs[1] == [learning_rate(s, straight.train) for s in range(1, 8)]
    assert lrs[0][-1] == pytest.approx(3e-4) and lrs[0][1] == 3e-3
    a, b = _final_state(run_a.root), _final_state(run_b.root)
    assert a.keys() == b.keys() and any(k.startswith("ema-0.9.safetensors/") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    recipe = smoke("train.steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=10", "train.ema_warmup=1",
                   "train.lr=3e-3", "train.ema_decay=0.99", "train.ema_decays=[0.1,0.9]")
    run = create_run(recipe, tmp_path_factory.mktemp("runs"))
    train_generator(run, recipe, show_progress=False)
    return run, recipe


def test_extra_emas_are_hand_rolled_averages_of_the_weights(ema_run):
    run, recipe = ema_run
    weights = [load_file(str(run.root / "generator" / f"step-{s:08d}" / "model.safetensors")) for s in range(1, 5)]
    final = run.root / "generator" / "step-00000004"
    for decay, name in ((0.99, "ema"), (0.1, "ema-0.1"), (0.9, "ema-0.9")):
        average = {k: v.clone() for k, v in weights[0].items()}  # ema_warmup=1: step 1 copies
        for step in range(2, 5):
            d = ema_decay_at(step, decay, recipe.train.ema_warmup)
            assert 0 < d <= decay
            for k, v in average.items():
                v.lerp_(weights[step - 1][k], 1 - d)
        stored = load_file(str(final / f"{name}.safetensors"))
        assert stored.keys() == average.keys()
        assert all(torch.equal(stored[k], average[k]) for k in stored), name
        loaded = load_generator(run.root, ema=decay)
        assert loaded.weights_path.name == f"{name}.safetensors"
        assert all(torch.equal(p, average[k]) for k, p in loaded.model.state_dict().items())
    assert load_generator(run.root).weights_path.name == "ema.safetensors"
    with pytest.raises(OdmaugError, match="no EMA of decay 0.7 .*0.99, 0.1, 0.9"):
        load_generator(run.root, ema=0.7)
    with pytest.raises(OdmaugError, match="raw"):
        load_generator(run.root, use_ema=False, ema=0.9)


def test_sample_and_augment_take_an_extra_ema_by_its_decay(ema_run, tmp_path):
    from typer.testing import CliRunner

    from odmaug.cli import app

    run, _ = ema_run
    runner = CliRunner()
    checkpoints = {}
    for name, extra in (("primary", []), ("0.1", ["--ema-decay", "0.1"])):
        done = runner.invoke(app, ["sample", "--run", str(run.root), "--out", str(tmp_path / f"{name}.png"),
                                   "--per-grade", "1", "--steps", "2", *extra])
        assert done.exit_code == 0, done.output
        checkpoints[name] = re.search(r"checkpoint ([0-9a-f]{16})", done.output).group(1)  # the weights file's digest
    # 0.1 leaves the ramp (1 + s) / (10 + s) at once, the primary 0.99 never in 4 steps: other weights
    assert checkpoints["primary"] != checkpoints["0.1"]
    out = tmp_path / "synthetic"
    done = runner.invoke(app, ["augment", "--run", str(run.root), "--out", str(out), "--n", "1", "--steps", "2",
                               "--ema-decay", "0.9"])
    assert done.exit_code == 0, done.output
    assert yaml.safe_load((out / "synthesis.json").read_text())["weights"] == "ema-0.9.safetensors"
    other = runner.invoke(app, ["augment", "--run", str(run.root), "--out", str(out), "--n", "1", "--steps", "2",
                                "--no-ema"])  # other weights into the same folder: refused, the files named
    assert other.exit_code == 2 and "weights ema-0.9.safetensors, now model.safetensors" in other.output
    raw = runner.invoke(app, ["sample", "--run", str(run.root), "--out", str(tmp_path / "raw.png"), "--per-grade", "1",
                              "--steps", "2", "--ema-decay", "0.1", "--no-ema"])  # --no-ema: the raw weights, no decay
    assert raw.exit_code == 0, raw.output
    missing = runner.invoke(app, ["sample", "--run", str(run.root), "--out", str(tmp_path / "x.png"), "--ema-decay", "0.7"])
    assert missing.exit_code == 2 and missing.output.count("error:") == 1 and "no EMA of decay 0.7" in missing.output
    assert load_recipe(None, []).sample.model_dump().keys().isdisjoint({"ema_decay"})  # store keys unchanged


def test_a_recipe_sampling_an_ema_its_training_does_not_keep_is_refused_when_loaded():
    with pytest.raises(OdmaugError, match=r"sample.ema_decay 0.5 is an EMA training does not keep.*0.999.*none"):
        load_recipe(SMOKE, ["sample.ema_decay=0.5"])  # before a benchmark trains a generator it cannot sample
    assert load_recipe(SMOKE, ["sample.ema_decay=0.5", "train.ema_decays=[0.5]"]).sample.loaded_ema_decay == 0.5
    assert load_recipe(SMOKE, ["sample.ema_decay=0.5", "train.ema_decays=[0.5]", "sample.use_ema=false"]).sample \
        .loaded_ema_decay is None


def test_checkpoints_without_extra_emas_still_load_and_resume(tmp_path):
    recipe = smoke("train.steps=2", "train.ema_warmup=0")  # the defaults: the format of every older run
    run = create_run(recipe, tmp_path)
    train_generator(run, recipe, show_progress=False)
    folder = run.root / "generator" / "step-00000002"
    assert sorted(p.name for p in folder.iterdir()) == ["ema.safetensors", "model.safetensors", "state.json",
                                                          "state.safetensors"]
    assert load_generator(run.root).weights_path.name == "ema.safetensors"
    assert load_generator(run.root, ema=recipe.train.ema_decay).weights_path.name == "ema.safetensors"
    with pytest.raises(OdmaugError, match="no EMA of decay 0.9"):
        load_generator(run.root, ema=0.9)
    with pytest.raises(OdmaugError, match="cannot gain a decay on resume"):
        train_generator(run, smoke("train.steps=3", "train.ema_warmup=0", "train.ema_decays=[0.9]"), resume=True,
                        show_progress=False)
    assert train_generator(run, smoke("train.steps=3", "train.ema_warmup=0"), resume=True,
                           show_progress=False).step == 3


def test_both_containers_round_trip_extra_emas(tmp_path):
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters())
    emas = {"ema-0.9995": {k: v + 1 for k, v in net.state_dict().items()}, "ema-0.5": net.state_dict()}
    state = TrainingState(3, net.state_dict(), optimizer.state_dict(), net.state_dict(), emas=emas)
    save_state_file(tmp_path / "s.safetensors", state)
    digests = save_state_folder(tmp_path / "f", state)
    assert {"ema-0.9995.safetensors", "ema-0.5.safetensors"} <= set(digests)
    for loaded in (load_state_file(tmp_path / "s.safetensors"), load_state_folder(tmp_path / "f", digests),
                   load_state_folder(tmp_path / "f")):
        assert loaded.emas.keys() == emas.keys() and loaded.extra == {}
        for name in emas:
            assert all(torch.equal(loaded.emas[name][k], v) for k, v in emas[name].items())
    with pytest.raises(ValueError, match="malformed"):
        save_state_file(tmp_path / "t.safetensors", TrainingState(1, {}, optimizer.state_dict(), emas={"x/y": {}}))


@pytest.mark.parametrize("decay", [0.0, 0.5, 0.9, 0.99, 0.995, 0.998, 0.999, 0.9995])
def test_ramp_end_is_the_first_step_at_the_decay(decay):
    end = ramp_end(decay, 7)
    assert ema_decay_at(end, decay, 7) == decay
    assert end == 8 or ema_decay_at(end - 1, decay, 7) < decay


def test_emas_that_only_follow_the_ramp_are_named_before_training(ema_run, monkeypatch):
    import odmaug.diffusion.trainer as trainer

    said = []
    monkeypatch.setattr(trainer, "warn", said.append)
    quick = load_recipe(SMOKE, ["train.steps=2000", "train.ema_warmup=100", "train.ema_decay=0.998",
                                "train.ema_decays=[0.99, 0.999]"])
    trainer.check_training_recipe(quick)
    assert said == [same_emas_note(quick.train)] and "0.998, 0.999 are one and the same in a 2,000-step run" in said[0]
    # the checkpoint agrees: EMAs that only followed the ramp are byte-identical (ema_run: 4 steps, decays 0.99, 0.1, 0.9)
    run, recipe = ema_run
    digests = read_pointer(run.root / "generator")["sha256"]
    assert digests["ema.safetensors"] == digests["ema-0.9.safetensors"] != digests["ema-0.1.safetensors"]
    assert same_emas_note(load_recipe(SMOKE, ["train.steps=20000", "train.ema_decays=[0.99]"]).train) is None
