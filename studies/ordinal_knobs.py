"""The ODM step's cost knobs at EQUAL WALL TIME: per-grade FID/KID (domain extractor) and grade fidelity.

Usage (the committed JSON; about 40 minutes of one CPU core, W = 450 s)::

    OMP_NUM_THREADS=1 ODMAUG_DATA_DIR=<folder holding retinamnist.npz> ODMAUG_OFFLINE=1 \\
        python studies/ordinal_knobs.py --work /tmp/ordinal_knobs --budget-s 450 --n 64 \\
        --classifier /tmp/sampler_quality/classifier

Smoke test (minutes): ``--budget-s 20 --probe-steps 6 --n 24 --kid-subset-size 12 --resamples 20
--work /tmp/ok_smoke --out /tmp/ok_smoke.json``.

The classifier (``--classifier``) is a real-data ``odmaug train-classifier`` folder made with
recipes/quickstart.yaml; it is both the domain extractor (its penultimate layer) and the judge of
grade fidelity. Steps, all on one thread, quickstart's recipe apart from ``diffusion.ordinal``:

1. Settings: ``paper`` (triplets random, fraction 1.0: docs/method.md), ``include-true-0.5`` and
   ``include-true-0.25`` (the quickstart default). Every setting first trains ``--probe-steps``
   steps (all probes before any long run, so they see the same machine load); its seconds per step
   is the median over the probe's log intervals after the first (warm-up).
2. Each run is resumed up to ``train.steps = round(W / step time)`` with W = ``--budget-s``: the
   same training wall time for every setting, not the same steps. The steps and the measured
   seconds (the trainer's ``train_end`` records: loop time, checkpoints included) are reported.
3. Each EMA generator synthesizes ``--n`` images per grade with quickstart's sample settings
   (DDIM 50, eta 1, guidance 2) and the SAME seeds 0..n-1 for every grade and setting.
4. Against the real TRAINING split: overall and per-grade FID and KID of the domain features
   (:func:`odmaug.metrics.generative.metrics_from_features`); intervals as studies/sampler_quality.py
   gives them (KID mean +- subset std; FID 2.5-97.5 percentile of ``--resamples`` bootstrap
   resamples of the generated images). Grade fidelity: the classifier's QWK and accuracy on the
   generated images (:func:`odmaug.classify.evaluate.evaluate_classifier`) with 95% bootstrap
   percentile intervals over the generated images (stratified by intended grade).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _common import ROOT, RESULTS_DIR, machine_record
from sampler_quality import evaluate, feature_sets, odmaug_cli, request

RECIPE = ROOT / "recipes" / "quickstart.yaml"
SETTINGS = {
    "paper": {"triplets": "random", "fraction": 1.0},
    "include-true-0.5": {"triplets": "include-true", "fraction": 0.5},
    "include-true-0.25": {"triplets": "include-true", "fraction": 0.25},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ordinal_knobs"), help="runs, images, evaluations")
    p.add_argument("--classifier", type=Path, default=Path("/tmp/sampler_quality/classifier"),
                   help="real-data classifier folder (domain extractor and grade-fidelity judge)")
    p.add_argument("--budget-s", type=float, default=450.0, help="W: training wall seconds per setting")
    p.add_argument("--probe-steps", type=int, default=30, help="steps that measure each setting's step time")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ", ".join(SETTINGS))
    p.add_argument("--n", type=int, default=64, help="generated images per grade and setting")
    p.add_argument("--kid-subset-size", type=int, default=50, help="below every set size")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (FID, QWK, accuracy)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "ordinal_knobs_amx.json")
    return p.parse_args()


def overrides(setting: str) -> list[str]:
    knobs = SETTINGS[setting]
    return [f"diffusion.ordinal.triplets={knobs['triplets']}", f"diffusion.ordinal.fraction={knobs['fraction']}"]


def run_folder(work: Path, setting: str) -> Path | None:
    found = sorted((work / "runs").glob(f"*-{setting}"))
    return found[-1] if found else None


def log_events(run: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == event]


def probe(work: Path, setting: str, steps: int) -> dict:
    """Train the first ``steps`` steps of ``setting`` (a new run folder, reused when present) and
    return its seconds per step: median of 1 / it_s over the log intervals after the first."""
    if run_folder(work, setting) is None:
        every = max(1, steps // 5)
        odmaug_cli(["train-generator", "-r", str(RECIPE), "--runs-dir", str(work / "runs"), "--name", setting,
                    "--device", "cpu", "--set", f"train.steps={steps}", "--set", f"train.log_every={every}",
                    "--set", "train.checkpoint_every=100000", "--set", "train.sample_every=100000",
                    "--set", "train.grid_per_grade=1", *sum((["--set", o] for o in overrides(setting)), [])],
                   work / "train.log")
    run = run_folder(work, setting)
    intervals = [1.0 / r["it_s"] for r in log_events(run, "train") if r["step"] <= steps][1:]
    return {"run": str(run), "probe_steps": steps, "probe_intervals_s_per_step": intervals,
            "s_per_step": statistics.median(intervals)}


def train_to_budget(work: Path, setting: str, steps: int) -> dict:
    """Resume ``setting``'s run up to ``steps``; training seconds summed over its ``train_end`` records."""
    run = run_folder(work, setting)
    odmaug_cli(["train-generator", "--resume", str(run), "--device", "cpu", "--set", f"train.steps={steps}"],
               work / "train.log")
    ends = log_events(run, "train_end")
    return {"steps": ends[-1]["step"], "train_seconds": sum(e["seconds"] for e in ends),
            "calls": [{"steps_this_call": e["steps_this_call"], "seconds": e["seconds"]} for e in ends]}


def synthesize(run: Path, recipe, n: int, folder: Path) -> torch.Tensor:
    """uint8 [5n, 3, H, W] from the run's EMA generator (seeds 0..n-1 per grade), also written as
    ``folder/<grade>/<seed>.png`` for the classifier; cached in ``folder/images.npy``."""
    from PIL import Image

    from odmaug.data import to_uint8
    from odmaug.diffusion import generate, load_generator

    cache = folder / "images.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    gen = load_generator(run, device="cpu")
    labels, seeds = request(n, gen.num_classes)
    t0 = time.perf_counter()
    images = to_uint8(generate(gen.model, gen.schedule, labels, seeds, recipe.sample))
    print(f"  {len(labels)} images in {time.perf_counter() - t0:.0f} s", flush=True)
    for image, grade, seed in zip(images, labels, seeds):
        (folder / str(grade)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / str(grade) / f"{seed:04d}.png")
    np.save(cache, images.numpy())
    return images


def bootstrap_ci(true: np.ndarray, pred: np.ndarray, classes: int, resamples: int) -> dict:
    """95% percentile intervals of QWK and accuracy over images resampled within intended grades
    (odmaug's paired bootstrap with the grades as strata and one "seed")."""
    from odmaug.metrics.bootstrap import paired_bootstrap

    boot = paired_bootstrap({"generated": pred[None]}, true, classes, metrics=("qwk", "accuracy"), refs=(),
                            n_boot=resamples, seed=0, strata=true)["arms"]["generated"]
    return {f"{m}_ci95": [boot[m]["ci_low"], boot[m]["ci_high"]] for m in ("qwk", "accuracy")}


def grade_fidelity(classifier: Path, folder: Path, classes: int, resamples: int) -> dict:
    """The classifier's QWK / accuracy / per-grade recall on the images under ``folder/<grade>/``."""
    from odmaug.classify.evaluate import evaluate_classifier
    from odmaug.data.sources import folder_table
    from odmaug.data.table import ImageTable

    frame = folder_table(folder, classes).assign(source="synthetic", split="test")
    table = ImageTable(frame, classes, f"{folder.name}/synthetic")
    metrics = evaluate_classifier(classifier, table, folder / "evaluation", "cpu")["overall"]
    preds = pd.read_csv(folder / "evaluation" / "predictions.csv")
    ci = bootstrap_ci(preds["label"].to_numpy(), preds["predicted"].to_numpy(), classes, resamples)
    return {"n": metrics["n"], "qwk": metrics["qwk"], "accuracy": metrics["accuracy"], **ci,
            "recall_per_grade": [row["recall"] for row in metrics["per_grade"]], "confusion": metrics["confusion"]}


def judge(setting: str, recipe, args, extractor, real, cfg) -> dict:
    """Synthesis, FID/KID with intervals and grade fidelity of one trained setting."""
    folder = args.work / "images" / setting
    images = synthesize(Path(run_folder(args.work, setting)), recipe, args.n, folder)
    gen_x = extractor(images).numpy()
    classes = recipe.data.num_classes
    gen_y = np.asarray(request(args.n, classes)[0])
    return {"n_per_grade": args.n, "n_images": int(len(gen_y)),
            "figures": evaluate(*real, gen_x, gen_y, cfg, args.resamples),
            "grade_fidelity": grade_fidelity(args.classifier, folder, classes, args.resamples)}


def print_table(results: dict, budget: float) -> None:
    print(f"\nequal wall time W = {budget:.0f} s per setting; FID [95% bootstrap] | KID x1e3 mean+-std")
    for name, e in results.items():
        gf = e["grade_fidelity"]
        print(f"{name:<18} steps {e['steps']:>5} ({e['train_seconds']:.0f} s, {e['s_per_step']:.3f} s/step probe)  "
              f"QWK {gf['qwk']:.3f} [{gf['qwk_ci95'][0]:.3f},{gf['qwk_ci95'][1]:.3f}]  "
              f"acc {gf['accuracy']:.3f} [{gf['accuracy_ci95'][0]:.3f},{gf['accuracy_ci95'][1]:.3f}]  n={gf['n']}")
        for r in [*e["figures"]["per_grade"], e["figures"]["overall"]]:
            print(f"{'':>18} grade {r['grade']!s:<4}FID {r['fid']:7.2f} [{r['fid_lo']:7.2f},{r['fid_hi']:7.2f}] | "
                  f"KID {1e3 * r['kid_mean']:6.2f}+-{1e3 * (r['kid_std'] or 0):5.2f}  (n_gen {r['n_generated']}, n_real {r['n_real']})")


def main() -> None:
    torch.set_num_threads(1)
    args = parse_args()
    settings = args.settings.split(",")
    if unknown := set(settings) - set(SETTINGS):
        raise SystemExit(f"unknown settings {sorted(unknown)}; choose from {list(SETTINGS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    from odmaug.atomic import atomic_write_json
    from odmaug.config import MetricsConfig, load_recipe

    recipe = load_recipe(RECIPE, ["device=cpu"])
    probes = {s: probe(args.work, s, args.probe_steps) for s in settings}
    for s, p in probes.items():
        print(f"{s}: {p['s_per_step']:.3f} s/step -> {round(args.budget_s / p['s_per_step'])} steps in W", flush=True)
    results = {s: {**SETTINGS[s], **probes[s], **train_to_budget(args.work, s, max(args.probe_steps, round(args.budget_s / probes[s]["s_per_step"])))}
               for s in settings}
    extractor, real_x, real_y = feature_sets(recipe, args.classifier)
    cfg = MetricsConfig(kid_subset_size=args.kid_subset_size)
    for s in settings:
        print(f"judging {s}", flush=True)
        results[s] |= judge(s, recipe, args, extractor, (real_x, real_y), cfg)
    clf = json.loads((args.classifier / "metrics.json").read_text())
    record = {"benchmark": "ordinal_knobs", "command": " ".join(["python", *sys.argv]),
              "host": machine_record(),
              "budget_s": args.budget_s, "recipe": str(RECIPE.relative_to(ROOT)), "sample_settings": recipe.sample.model_dump(),
              "classifier": {"folder": str(args.classifier), "test_qwk": clf["test"]["qwk"],
                             "test_accuracy": clf["test"]["accuracy"], "feature_dim": extractor.dim},
              "real_set": {"split": "train", "n": int(len(real_y)), "per_grade": np.bincount(real_y).tolist()},
              "metric_settings": {"kid_subsets": cfg.kid_subsets, "kid_subset_size": cfg.kid_subset_size,
                                  "fid_interval": f"2.5-97.5 percentile of {args.resamples} bootstrap resamples of the generated images",
                                  "kid_interval": "mean +- std over KID subsets (odmaug's kid_std)",
                                  "fidelity_interval": f"2.5-97.5 percentile of {args.resamples} stratified bootstrap resamples"},
              "results": results}
    atomic_write_json(args.out, record)
    print_table(results, args.budget_s)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
