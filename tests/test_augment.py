"""``odmaug augment`` end to end on a smoke generator: outputs, determinism, resume after kill -9,
refusals, torchrun sharding, the grade filter, and augment -> balance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from odmaug.augment import GradeFilter, SynthesisRequest, run_synthesis
from odmaug.augment.synthesis_folder import MANIFEST_COLUMNS
from odmaug.cli import app
from odmaug.config import SampleConfig, load_recipe, merge_options
from odmaug.data import load_table, to_uint8
from odmaug.data.sources import read_manifest
from odmaug.runs import create_run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"
FAST = SampleConfig(sampler="ddim", steps=2, eta=0.0, guidance_scale=2.0)
FAST_ARGS = ["--steps", "2", "--no-grid"]


ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def synth(run, out, classes, n, settings=FAST, **request):
    """``run_synthesis`` on the CPU without a progress bar."""
    return run_synthesis(SynthesisRequest(run, out, classes, n, settings=settings, **request), device="cpu",
                         show_progress=False)



def pngs(folder: Path) -> dict[str, bytes]:
    """``{"<grade>/<seed>.png": bytes}`` of a synthesis folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.png"))}


def augment(*args: str) -> "Result":  # noqa: F821 - click's Result
    return CliRunner().invoke(app, ["augment", *args])


def test_cli_augment_writes_images_manifest_record_and_grid(smoke_run, tmp_path):
    out = tmp_path / "syn"
    result = augment("--run", str(smoke_run), "--target-class", "4", "--n", "5", "--out", str(out),
                     "--steps", "2", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert "generated 5 images" in result.output and "in manifest" in result.output
    assert sorted(pngs(out)) == [f"4/{s}.png" for s in range(5)]
    with Image.open(out / "4" / "3.png") as img:
        assert img.size == (16, 16) and img.mode == "RGB"
    raw = pd.read_csv(out / "manifest.csv")
    assert list(raw.columns) == MANIFEST_COLUMNS
    assert raw["path"].tolist() == [f"4/{s}.png" for s in range(5)]
    assert set(raw["source"]) == {"synthetic"} and set(raw["split"]) == {"train"}
    assert set(raw["steps"]) == {2} and set(raw["sampler"]) == {"ddim"} and set(raw["guidance_scale"]) == {2.0}
    record = json.loads((out / "synthesis.json").read_text())
    assert record["identity"]["checkpoint_id"] == raw["checkpoint_id"][0]
    assert record["generator_run"] == smoke_run.name == raw["generator_run"][0]
    assert (out / "grid.png").is_file()
    # The generator run's log records the synthesis.
    log = [json.loads(line) for line in (smoke_run / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "synthesis" and r["out"] == str(out) for r in log)

    # A second run finds everything and changes nothing.
    before = {p: (out / p).stat().st_mtime_ns for p in pngs(out)}
    result = augment("--run", str(smoke_run), "--target-class", "4", "--n", "5", "--out", str(out), *FAST_ARGS)
    assert result.exit_code == 0, result.output
    assert "generated 0 images" in result.output and "5 already there" in result.output
    assert {p: (out / p).stat().st_mtime_ns for p in pngs(out)} == before


def test_same_seed_same_image_whatever_batch_size(smoke_run, tmp_path):
    one = synth(smoke_run, tmp_path / "a", "3,4", 3, merge_options(FAST, batch_size=1))
    six = synth(smoke_run, tmp_path / "b", [3, 4], 3, merge_options(FAST, batch_size=6))
    assert one.generated == six.generated == 6
    assert pngs(tmp_path / "a") == pngs(tmp_path / "b")  # bitwise-equal PNG files
    # seed_start: a later range reproduces the same (grade, seed) images.
    synth(smoke_run, tmp_path / "c", [4], 2, seed_start=1)
    assert pngs(tmp_path / "c") == {k: v for k, v in pngs(tmp_path / "a").items() if k in ("4/1.png", "4/2.png")}
    # The PNG holds exactly what the generator makes for that grade and seed (in an aligned batch).
    from odmaug.diffusion import generate, load_generator

    gen = load_generator(smoke_run, device="cpu")
    image = generate(gen.model, gen.schedule, [3, 0, 1, 2, 4, 4, 4, 4], [2, 5, 6, 7, 8, 9, 10, 11],
                     merge_options(FAST, batch_size=8))
    expected = to_uint8(image)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "3" / "2.png")), expected)
    # Different seeds give different images.
    assert pngs(tmp_path / "a")["3/0.png"] != pngs(tmp_path / "a")["3/1.png"]


def test_compiled_synthesis_matches_eager_and_auto_skips_small_jobs(smoke_run, tmp_path):
    from odmaug.diffusion.sampling import can_compile

    # fp32: in bf16 (precision auto on AMX CPUs) compiled and eager kernels differ by bf16 rounding,
    # which the first trailing step (x0 = (x - ...) / sqrt(abar_{T-1}), a 220x gain) makes visible
    fp32 = FAST.model_copy(update={"precision": "fp32"})
    eager = synth(smoke_run, tmp_path / "eager", [3, 4], 10, merge_options(fp32, batch_size=8, compile="auto"))
    assert not eager.compiled  # 20 images x 2 steps: far too small a job to pay for a compile
    if not can_compile(torch.device("cpu")):
        pytest.skip("no C++ compiler on PATH: torch.compile cannot build CPU kernels here")
    compiled = synth(smoke_run, tmp_path / "compiled", [3, 4], 10, merge_options(fp32, batch_size=8, compile=True))
    assert compiled.compiled and compiled.generated == 20  # batches of 8, 8 and a last one padded to 8
    a, b = pngs(tmp_path / "eager"), pngs(tmp_path / "compiled")
    assert a.keys() == b.keys() and len(a) == 20
    for name in a:  # compiled kernels round differently (~1e-6): at most one grey level apart
        pa = np.asarray(Image.open(tmp_path / "eager" / name)).astype(int)
        pb = np.asarray(Image.open(tmp_path / "compiled" / name)).astype(int)
        assert np.abs(pa - pb).max() <= 1, name
    events = [json.loads(line) for line in (smoke_run / "log.jsonl").read_text().splitlines()]
    assert [e["compiled"] for e in events if e.get("event") == "synthesis"][-2:] == [False, True]


def test_rerun_repairs_missing_corrupt_and_temporary_files(smoke_run, tmp_path):
    out = tmp_path / "syn"
    synth(smoke_run, out, [4], 4)
    reference = pngs(out)
    (out / "4" / "1.png").unlink()
    data = (out / "4" / "2.png").read_bytes()
    (out / "4" / "2.png").write_bytes(data[: len(data) // 2])  # truncated
    (out / "4" / ".3.png.x1y2.tmp").write_bytes(b"partial")
    (out / "manifest.csv").write_text("path,label\n4/99.png,4\n")  # a stale manifest
    summary = synth(smoke_run, out, [4], 4)
    assert (summary.present, summary.generated) == (2, 2)
    assert pngs(out) == reference
    assert not list(out.glob("*/.*.tmp"))
    assert pd.read_csv(out / "manifest.csv")["path"].tolist() == [f"4/{s}.png" for s in range(4)]


def test_kill_9_mid_run_then_rerun_gives_exactly_the_requested_set(smoke_run, tmp_path):
    out, ref = tmp_path / "killed", tmp_path / "reference"
    n = 24
    cmd = [sys.executable, "-m", "odmaug", "augment", "--run", str(smoke_run), "--target-class", "3,4", "--n", str(n),
           "--out", str(out), "--steps", "10", "--batch-size", "2", "--no-grid", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD_ENV)
    deadline = time.time() + 240
    try:
        while proc.poll() is None and time.time() < deadline:
            if len(list(out.glob("*/*.png"))) >= 3:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and time.time() >= deadline:
            proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the synthesis finished before it could be killed"
    assert len(list(out.glob("*/*.png"))) < 2 * n
    assert not (out / "manifest.csv").exists()

    result = augment("--run", str(smoke_run), "--target-class", "3,4", "--n", str(n), "--out", str(out),
                     "--steps", "10", "--batch-size", "5", "--no-grid", "--device", "cpu")
    assert result.exit_code == 0, result.output
    settings = SampleConfig(steps=10, guidance_scale=2.0)
    synth(smoke_run, ref, [3, 4], n, merge_options(settings, batch_size=16))
    assert pngs(out) == pngs(ref)  # no gaps, no duplicates, bitwise-equal images
    assert not list(out.glob("*/.*.tmp"))
    frame = read_manifest(out / "manifest.csv", 5)
    assert len(frame) == 2 * n and not frame["path"].duplicated().any()
    assert all(Path(p).is_file() for p in frame["path"])


def test_auto_fills_scarce_grades_and_balance_uses_them(smoke_run, tmp_path):
    real = load_table(load_recipe(RECIPE).data).split("train").counts()
    out = tmp_path / "syn"
    result = augment("--run", str(smoke_run), "--target-class", "auto", "--out", str(out), "--steps", "1",
                     "--batch-size", "32", "--no-grid")
    assert result.exit_code == 0, result.output
    frame = read_manifest(out / "manifest.csv", 5)
    made = np.bincount(frame["label"], minlength=5)
    assert (made + real).tolist() == [real.max()] * 5 and made[int(real.argmax())] == 0

    result = augment("--run", str(smoke_run), "--target-class", "auto", "--n", "1", "--out", str(tmp_path / "n1"),
                     *FAST_ARGS)
    assert result.exit_code == 0, result.output
    assert sorted(pngs(tmp_path / "n1")) == sorted(f"{g}/0.png" for g in range(5) if real[g] < real.max())

    dataset = tmp_path / "odm.csv"
    result = CliRunner().invoke(app, ["balance", "--recipe", str(RECIPE), "--synthetic", str(out / "manifest.csv"),
                                      "--out", str(dataset)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    merged = read_manifest(dataset, 5)
    train = merged[merged["split"] == "train"]
    assert np.bincount(train["label"]).tolist() == [real.max()] * 5
    assert (train["source"] == "synthetic").sum() == made.sum()


def test_bad_inputs_are_one_line_and_write_nothing(smoke_run, tmp_path, monkeypatch):
    out = tmp_path / "syn"
    run = str(smoke_run)
    cases = [
        (["--target-class", "5", "--n", "2"], "--target-class 5 is outside the grades 0..4"),
        (["--target-class", "4", "--n", "0"], "--n must be a positive number"),
        (["--target-class", "4", "--n", "2", "--to-count", "9"], "not both"),
        (["--target-class", "4", "--n", "2", "--steps", "0"], "--steps must be at least 1"),
        (["--target-class", "4", "--n", "2", "--max-grade-error", "1"], "needs --filter-with"),
    ]
    for args, message in cases:
        result = augment("--run", run, "--out", str(out), *args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            args, result.output)
    assert not out.exists()

    # A run folder without a generator checkpoint.
    bare = create_run(load_recipe(RECIPE), tmp_path / "runs")
    result = augment("--run", str(bare.root), "--target-class", "4", "--n", "2", "--out", str(out))
    assert result.exit_code == 2 and "no generator checkpoint" in result.output
    result = augment("--run", str(tmp_path / "nope"), "--target-class", "4", "--n", "2")
    assert result.exit_code == 2 and "run folder not found" in result.output

    # A checkpoint whose grade count differs from the data.
    other = tmp_path / "four-grades"
    shutil.copytree(smoke_run, other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["data"]["num_classes"] = 4
    config["data"]["synthetic"]["counts"] = config["data"]["synthetic"]["counts"][:4]
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    result = augment("--run", str(other), "--target-class", "3", "--n", "2", "--out", str(out))
    assert result.exit_code == 2 and "5 grades" in result.output and "4" in result.output
    assert not out.exists()

    # Not enough disk space: refused before anything is written.
    class Usage:
        free = 1000

    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage())
    result = augment("--run", run, "--target-class", "4", "--n", "50", "--out", str(out), *FAST_ARGS)
    assert result.exit_code == 2 and "not enough disk space" in result.output, result.output
    assert not out.exists() or not any(out.iterdir())


def test_other_settings_are_refused_unless_forced(smoke_run, tmp_path):
    out = tmp_path / "syn"
    args = ["--run", str(smoke_run), "--target-class", "4", "--n", "2", "--out", str(out), "--no-grid"]
    assert augment(*args, "--steps", "2").exit_code == 0
    before = pngs(out)
    manifest = (out / "manifest.csv").read_bytes()
    for extra, what in ((["--steps", "3"], "steps=2 (now 3)"), (["--steps", "2", "--guidance", "1.5"], "guidance_scale"),
                        (["--steps", "2", "--no-ema"], "checkpoint_id")):
        result = augment(*args, *extra)
        assert result.exit_code == 2 and what in result.output and "--force" in result.output, result.output
    assert pngs(out) == before and (out / "manifest.csv").read_bytes() == manifest
    result = augment(*args, "--steps", "3", "--force")
    assert result.exit_code == 0, result.output
    assert "replaced 2 old images" in result.output
    assert json.loads((out / "synthesis.json").read_text())["identity"]["steps"] == 3
    assert sorted(pngs(out)) == sorted(before) and pngs(out) != before
    assert set(pd.read_csv(out / "manifest.csv")["steps"]) == {3}


@pytest.mark.slow
def test_torchrun_shards_seeds_over_two_ranks(smoke_run, tmp_path):
    out, ref = tmp_path / "dist", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "odmaug", "--",
           "augment", "--run", str(smoke_run), "--target-class", "3,4", "--n", "5", "--out", str(out),
           "--steps", "2", "--batch-size", "2", "--no-grid", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ONE_THREAD_ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on 2 ranks" in done.stdout and done.stdout.count("wrote") == 1  # rank 0 alone reports
    synth(smoke_run, ref, [3, 4], 5)
    assert pngs(out) == pngs(ref)
    assert not list(out.glob("manifest.rank*.csv"))  # merged, then removed
    assert pd.read_csv(out / "manifest.csv")["path"].tolist() == pd.read_csv(ref / "manifest.csv")["path"].tolist()
    log = [json.loads(line) for line in (smoke_run / "log.jsonl").read_text().splitlines()]
    assert any(r["event"] == "synthesis" and r["out"] == str(out) and r["world_size"] == 2 for r in log)


def test_grade_filter_keeps_images_graded_close(smoke_run, tmp_path):
    from odmaug.augment.filter import predict_grades
    from odmaug.classify import ClassifierMeta, create_model, load_classifier, save_classifier

    torch.manual_seed(0)
    save_classifier(create_model("resnet10t", 5, 16), ClassifierMeta("resnet10t", 5, 16), tmp_path / "clf")
    out = tmp_path / "syn"
    summary = synth(smoke_run, out, [0, 4], 6, grade_filter=GradeFilter(tmp_path / "clf", max_grade_error=1))
    model, meta = load_classifier(tmp_path / "clf")
    files = sorted(out.glob("*/*.png"))
    predicted = predict_grades(model, meta, files, torch.device("cpu"))
    truth = np.array([int(p.parent.name) for p in files])
    keep = np.abs(predicted - truth) <= 1
    frame = read_manifest(out / "manifest.csv", 5)
    assert sorted(frame["path"]) == sorted(str(p.resolve()) for p, k in zip(files, keep) if k)
    assert (np.abs(frame["predicted_grade"] - frame["label"]) <= 1).all()
    assert summary.manifest_rows == keep.sum() and sum(summary.filtered_out.values()) == (~keep).sum()
    grading = pd.read_csv(out / "grading.csv")
    assert len(grading) == 12 and grading["predicted_grade"].tolist() == [
        int(predicted[files.index(out / p)]) for p in grading["path"]
    ]
    # A re-run grades nothing again: the cache answers (edit it to prove it is read).
    grading["predicted_grade"] = [int(p.split("/")[0]) for p in grading["path"]]
    grading.to_csv(out / "grading.csv", index=False)
    again = synth(smoke_run, out, [0, 4], 6, grade_filter=GradeFilter(tmp_path / "clf", max_grade_error=0))
    assert again.generated == 0 and again.manifest_rows == 12
    # Without a filter the manifest lists every image again.
    plain = synth(smoke_run, out, [0, 4], 6)
    assert plain.manifest_rows == 12 and "predicted_grade" not in pd.read_csv(out / "manifest.csv").columns


def test_a_missing_filter_classifier_fails_before_any_image_is_made(smoke_run, tmp_path):
    out = tmp_path / "syn"
    result = augment("--run", str(smoke_run), "--target-class", "4", "--n", "2", "--out", str(out),
                     "--filter-with", str(tmp_path / "no-classifier"), *FAST_ARGS)
    assert result.exit_code == 2 and "classifier not found" in result.output
    assert not out.exists()  # nothing generated, no settings recorded
