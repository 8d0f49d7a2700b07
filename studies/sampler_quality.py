"""Fewer sampling steps at DDIM-100's quality: per-grade FID/KID (domain extractor) and images/s.

Usage (the committed JSON; about an hour of one CPU core)::

    OMP_NUM_THREADS=1 ODMAUG_DATA_DIR=<folder holding retinamnist.npz> ODMAUG_OFFLINE=1 \\
        python studies/sampler_quality.py --work /tmp/sampler_quality

Smoke test (minutes): ``--gen-steps 5 --epochs 1 --n 24 --kid-subset-size 12 --resamples 20
--configs ddim:100,dpmpp-2m:10 --out /tmp/sq_smoke.json --work /tmp/sq_smoke``. All on one thread, with
recipes/quickstart.yaml's settings (sampling precision ``auto``: bf16 autocast on CPUs with bf16 units):

1. ``odmaug train-generator`` (``--gen-steps``) and ``odmaug train-classifier`` (real data, ``--epochs``)
   into ``--work``, reused when present (a shorter generator run is resumed up to ``--gen-steps``).
2. Every configuration ``sampler:steps[:eta]`` (eta default: the recipe's) synthesizes ``--n`` images
   per grade with :func:`odmaug.diffusion.generate`, the recipe's guidance and the SAME seeds 0..n-1
   for every grade and configuration; wall and process CPU time of that call give images/s (images
   stay in memory, no PNGs; cached in ``--work/samples`` per checkpoint).
3. Domain-extractor features (the classifier's penultimate layer) of the real TRAINING split and of
   every configuration; odmaug's per-grade and overall FID, KID, precision, recall
   (:func:`odmaug.metrics.generative.metrics_from_features`), ``--kid-subset-size`` below every set
   size so that KID's subset std exists. Intervals: KID mean +- subset std; FID 2.5-97.5 percentiles
   of ``--resamples`` bootstrap resamples of the generated images (within grades), and paired by seed
   the same for FID(config) - FID(DDIM-100).
4. A configuration matches DDIM-100 (the recipe's eta) on a grade when both intervals overlap there;
   per sampler, the smallest step count matching on every grade and its speed-up over DDIM-100 (CPU
   time, robust to other processes on a shared host; wall time beside it). Also against the control
   ``ddim:100:0``: deterministic DDIM integrates the same probability-flow ODE as the solvers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import ROOT, RESULTS_DIR, machine_record
from odmaug.atomic import atomic_write_json
from odmaug.config import MetricsConfig, load_recipe, merge_options
from odmaug.data import load_table, to_uint8
from odmaug.diffusion import generate, load_generator
from odmaug.metrics.features import build_extractor
from odmaug.metrics.generative import extract_table_features, fid_from_features, metrics_from_features

RECIPE = ROOT / "recipes" / "quickstart.yaml"
REFERENCE = "ddim:100"
ODE_REFERENCE = "ddim:100:0"
CONFIGS = ("ddim:100,ddim:25,ddim:50,dpmpp-2m:10,dpmpp-2m:15,dpmpp-2m:20,dpmpp-2m:25,unipc:10,unipc:15,unipc:20,"
           "ddim:100:0,ddim:25:0")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/sampler_quality"), help="runs, classifier, samples")
    p.add_argument("--gen-steps", type=int, default=2000, help="generator training steps (quickstart: 2000)")
    p.add_argument("--epochs", type=int, default=30, help="classifier epochs (quickstart: 30)")
    p.add_argument("--n", type=int, default=128, help="images per grade and configuration")
    p.add_argument("--configs", default=CONFIGS, help="sampler:steps[:eta],... (first: the reference)")
    p.add_argument("--kid-subset-size", type=int, default=50, help="below every set size (grade 4: 66 real)")
    p.add_argument("--resamples", type=int, default=200, help="FID bootstrap resamples")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "sampler_quality_amx.json")
    return p.parse_args()


def odmaug_cli(args: list[str], log: Path) -> None:
    """Run ``python -m odmaug ARGS`` on one thread, output appended to ``log``; exit on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print("$ odmaug " + " ".join(args), flush=True)
    with log.open("a") as out:
        code = subprocess.run([sys.executable, "-m", "odmaug", *args], env=env, stdout=out, stderr=out).returncode
    if code:
        raise SystemExit(f"odmaug {args[0]} failed (exit {code}); see {log}")


def trained_generator(work: Path, steps: int) -> Path:
    """The quickstart ODM run folder under ``work/runs`` trained to ``steps`` (reused, resumed or new)."""
    runs = sorted((work / "runs").glob("*-sq-generator"))
    done = load_generator(runs[-1], device="cpu").step if runs and (runs[-1] / "generator" / "checkpoint.json").exists() else -1
    if done >= steps:
        return runs[-1]
    common = ["--device", "cpu", "--set", f"train.steps={steps}"]
    if done >= 0:
        odmaug_cli(["train-generator", "--resume", str(runs[-1]), *common], work / "train.log")
    else:
        odmaug_cli(["train-generator", "-r", str(RECIPE), "--runs-dir", str(work / "runs"), "--name", "sq-generator",
                    *common], work / "train.log")
    return sorted((work / "runs").glob("*-sq-generator"))[-1]


def trained_classifier(work: Path, epochs: int) -> Path:
    """The real-data classifier folder ``work/classifier`` (reused when present)."""
    folder = work / "classifier"
    if not (folder / "model.safetensors").exists():
        odmaug_cli(["train-classifier", "-r", str(RECIPE), "--out", str(folder), "--device", "cpu",
                    "--set", f"classifier.epochs={epochs}"], work / "classifier.log")
    return folder


def request(n: int, grades: int) -> tuple[list[int], list[int]]:
    """Labels and seeds: grade g gets seeds 0..n-1 (as ``augment`` lays them out), for every configuration."""
    return [g for g in range(grades) for _ in range(n)], [s for _ in range(grades) for s in range(n)]


def synthesize(gen, recipe, config: str, n: int, work: Path) -> dict:
    """uint8 images [5n, 3, H, W] of one configuration with its wall/CPU seconds (cached per checkpoint)."""
    sampler, steps, *eta = config.split(":")
    cache = work / "samples" / f"{gen.checkpoint_id}-{config.replace(':', '-')}-n{n}.npz"
    if cache.exists():
        saved = np.load(cache)
        return {"images": torch.from_numpy(saved["images"]), **json.loads(str(saved["timing"]))}
    labels, seeds = request(n, gen.num_classes)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    settings = merge_options(recipe.sample, None, sampler=sampler, steps=int(steps), eta=float(eta[0]) if eta else None)
    images = to_uint8(generate(gen.model, gen.schedule, labels, seeds, settings))
    timing = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
              "load_before": load_before, "load_after": os.getloadavg()[0]}
    np.savez(cache, images=images.numpy(), timing=json.dumps(timing))
    return {"images": images, **timing}


def fid_interval(real, gen_x, gen_y, refs: dict, grade, resamples: int, seed: int) -> dict:
    """FID's bootstrap 2.5/97.5 percentiles and std, generated rows resampled within each grade
    (``grade`` None: all, stratified), real rows fixed; the same rows of each reference's features
    (``refs``: key suffix -> [N, D], same grades and seeds) give FID(config) - FID(reference)'s
    percentiles (``dfid<suffix>_lo/hi``): a paired test."""
    rng, (real_x, real_y) = np.random.default_rng(seed), real
    keep = np.ones(len(gen_y), bool) if grade is None else gen_y == grade
    real_x = real_x if grade is None else real_x[real_y == grade]
    groups = [np.flatnonzero(gen_y[keep] == g) for g in np.unique(gen_y[keep])]
    values, deltas = [], {suffix: [] for suffix in refs}
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(ix, len(ix)) for ix in groups])
        values.append(fid_from_features(real_x, gen_x[keep][rows]))
        for suffix, ref_x in refs.items():
            deltas[suffix].append(values[-1] - fid_from_features(real_x, ref_x[keep][rows]))
    out = dict(zip(("fid_lo", "fid_hi"), np.percentile(values, [2.5, 97.5])), fid_boot_std=np.std(values, ddof=1))
    for suffix, d in deltas.items():
        out |= dict(zip((f"dfid{suffix}_lo", f"dfid{suffix}_hi"), np.percentile(d, [2.5, 97.5])))
    return out


def with_intervals(row: dict, fid_ci: dict) -> dict:
    """odmaug's metric row plus ``fid_lo/fid_hi/fid_boot_std/dfid_lo/dfid_hi`` and ``kid_lo/kid_hi`` (mean +- std)."""
    std = row["kid_std"] or 0.0  # None only when the subsets cannot vary (odmaug omits the std then)
    return {**row, **{k: float(v) for k, v in fid_ci.items()}, "kid_lo": row["kid_mean"] - std, "kid_hi": row["kid_mean"] + std}


def evaluate(real, gen_x, gen_y, refs: dict, cfg, resamples: int) -> dict:
    """Overall and per-grade figures with intervals for one configuration."""
    out = metrics_from_features(*real, gen_x, gen_y, int(real[1].max()) + 1, cfg, seed=0, extractor="domain")
    overall = with_intervals(out["overall"], fid_interval(real, gen_x, gen_y, refs, None, resamples, 0))
    per_grade = [with_intervals(row, fid_interval(real, gen_x, gen_y, refs, row["grade"], resamples, 1 + row["grade"]))
                 for row in out["per_grade"]]
    return {"overall": overall, "per_grade": per_grade}


def mark_matches(results: dict, reference: str, key: str) -> None:
    """Per grade and overall: ``row[key]`` = FID and KID intervals both overlap ``reference``'s;
    ``entry[key + "_every_grade"]`` and ``entry[key + "_overall"]`` sum them up."""
    ref = results[reference]["figures"]
    overlaps = lambda row, ref, k: row[f"{k}_lo"] <= ref[f"{k}_hi"] and ref[f"{k}_lo"] <= row[f"{k}_hi"]  # noqa: E731
    for entry in results.values():
        fig = entry["figures"]
        for row, ref_row in zip([fig["overall"], *fig["per_grade"]], [ref["overall"], *ref["per_grade"]]):
            row[key] = overlaps(row, ref_row, "fid") and overlaps(row, ref_row, "kid")
        entry[f"{key}_every_grade"] = all(row[key] for row in fig["per_grade"])
        entry[f"{key}_overall"] = fig["overall"][key]


def add_speed(results: dict) -> None:
    """images/s (wall and CPU time) and the speed-up over the reference."""
    ref = results[REFERENCE]
    for entry in results.values():
        for clock in ("wall", "cpu"):
            entry[f"images_per_s_{clock}"] = entry["n_images"] / entry[f"{clock}_s"]
            entry[f"speedup_{clock}"] = entry[f"images_per_s_{clock}"] * ref[f"{clock}_s"] / ref["n_images"]


def summarize(results: dict, reference: str, key: str) -> dict:
    """Per sampler (ddim: per eta) the smallest step count matching ``reference`` on every grade
    (``entry[key + "_every_grade"]``) with its speed-up over ``reference``; the fastest configuration (CPU time) matching on every grade,
    and the fastest matching on every grade and overall."""
    best: dict[str, dict] = {}
    for config, entry in sorted(results.items(), key=lambda kv: int(kv[0].split(":")[1])):
        family = config.split(":")[0] + "".join(f":eta{e}" for e in config.split(":")[2:])
        if config != reference and entry[f"{key}_every_grade"] and family not in best:
            # speed-ups over THIS summary's reference (entry["speedup_*"] are over REFERENCE)
            best[family] = {"config": config, "steps": entry["steps"], "also_overall": entry[f"{key}_overall"],
                            **{f"speedup_{c}": entry[f"speedup_{c}"] / results[reference][f"speedup_{c}"]
                               for c in ("cpu", "wall")}}
    fastest = lambda *keys: max((c for c, e in results.items() if c != reference and all(e[k] for k in keys)),  # noqa: E731
                                key=lambda c: results[c]["speedup_cpu"], default=None)
    return {"reference": reference, "smallest_matching_every_grade": best,
            "fastest_matching_every_grade": fastest(f"{key}_every_grade"),
            "fastest_matching_every_grade_and_overall": fastest(f"{key}_every_grade", f"{key}_overall")}


def feature_sets(recipe, classifier: Path):
    """The domain extractor and the real TRAINING split's features [N, D] and grades [N]."""
    extractor = build_extractor(f"domain:{classifier}", MetricsConfig(), "cpu")
    table = load_table(recipe.data).split("train")
    real_x, real_y = extract_table_features(table, extractor, recipe.data.image_size, recipe.data.crop_box)
    return extractor, real_x, real_y


def print_table(results: dict, summaries: list[dict]) -> None:
    """Per configuration: speed and match flags; per grade: FID [bootstrap], paired dFID, KID, matches."""
    yes = lambda flag: "yes" if flag else ("no" if flag is not None else "-")  # noqa: E731
    dfid_ode = lambda r: f" [{r['dfid_ode_lo']:6.1f},{r['dfid_ode_hi']:6.1f}]" if "dfid_ode_lo" in r else ""  # noqa: E731
    print(f"\n{'config':<12}{'img/s wall':>11}{'img/s cpu':>10}{'x cpu':>7}{'x wall':>7}  match every grade/overall (vs "
          f"{REFERENCE}; vs {ODE_REFERENCE}); per grade: FID [95%] paired dFID [vs each] | KID +- std | matches")
    for config, e in results.items():
        print(f"{config:<12}{e['images_per_s_wall']:>11.2f}{e['images_per_s_cpu']:>10.2f}{e['speedup_cpu']:>7.2f}"
              f"{e['speedup_wall']:>7.2f}  {yes(e['matches_every_grade'])}/{yes(e['matches_overall'])}; "
              f"{yes(e.get('matches_ode_every_grade'))}/{yes(e.get('matches_ode_overall'))}")
        for r in [*e["figures"]["per_grade"], e["figures"]["overall"]]:
            print(f"{'':>6}grade {r['grade']!s:<4}FID {r['fid']:7.1f} [{r['fid_lo']:6.1f},{r['fid_hi']:6.1f}] "
                  f"dFID [{r['dfid_lo']:6.1f},{r['dfid_hi']:6.1f}]{dfid_ode(r)} | KID {r['kid_mean']:7.3f} +- {r['kid_std'] or 0:7.3f}"
                  f" | {yes(r['matches'])} {yes(r.get('matches_ode'))}")
    for summary in summaries:
        print(f"\nvs {summary['reference']}: smallest matching on every grade "
              f"{json.dumps(summary['smallest_matching_every_grade'])}\n  fastest: {summary['fastest_matching_every_grade']};"
              f" fastest also matching overall: {summary['fastest_matching_every_grade_and_overall']}")


def run_configs(gen, recipe, args, extractor, real, cfg) -> dict:
    """Synthesize, time and evaluate every configuration (the reference first)."""
    results, features = {}, {}
    gen_y = np.asarray(request(args.n, gen.num_classes)[0])
    for config in args.configs.split(","):
        made = synthesize(gen, recipe, config, args.n, args.work)
        features[config] = extractor(made["images"]).numpy()
        sampler, steps, *eta = config.split(":")
        results[config] = {"sampler": sampler, "steps": int(steps), "eta": float(eta[0]) if eta else recipe.sample.eta,
                           "n_images": len(gen_y), "n_per_grade": args.n,
                           **{k: made[k] for k in ("wall_s", "cpu_s", "load_before", "load_after")}}
        print(f"{config}: {len(gen_y)} images in {made['wall_s']:.0f} s wall, {made['cpu_s']:.0f} s CPU", flush=True)
    refs = {suffix: features[ref] for suffix, ref in (("", REFERENCE), ("_ode", ODE_REFERENCE)) if ref in features}
    for config, gen_x in features.items():
        results[config]["figures"] = evaluate(real, gen_x, gen_y, refs, cfg, args.resamples)
    return results


def training_seconds(run: Path, classifier: Path) -> dict:
    """Seconds spent training the generator (every call, from the run's log) and the classifier."""
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    clf = json.loads((classifier / "metrics.json").read_text())
    return {"generator_s": sum(e["seconds"] for e in events if e.get("event") == "train_end"),
            "classifier_s": clf["timing"]["train_seconds"], "classifier_test_qwk": clf["test"]["qwk"],
            "classifier_test_accuracy": clf["test"]["accuracy"]}


def main() -> None:
    torch.set_num_threads(1)
    args = parse_args()
    if not args.configs.startswith(REFERENCE):
        raise SystemExit(f"--configs must start with the reference {REFERENCE}")
    (args.work / "samples").mkdir(parents=True, exist_ok=True)
    recipe = load_recipe(RECIPE, ["device=cpu"])
    run = trained_generator(args.work, args.gen_steps)
    classifier = trained_classifier(args.work, args.epochs)
    gen = load_generator(run, device="cpu")
    for sampler in ("ddim", "unipc"):  # warm-up (first-call costs, diffusers' import), untimed
        generate(gen.model, gen.schedule, [0, 1], [0, 1], merge_options(recipe.sample, None, sampler=sampler, steps=3))
    extractor, real_x, real_y = feature_sets(recipe, classifier)
    cfg = MetricsConfig(kid_subset_size=args.kid_subset_size)
    results = run_configs(gen, recipe, args, extractor, (real_x, real_y), cfg)
    add_speed(results)
    summaries = [(REFERENCE, "matches"), (ODE_REFERENCE, "matches_ode")][: 1 + (ODE_REFERENCE in results)]
    for reference, key in summaries:
        mark_matches(results, reference, key)
    summaries = [summarize(results, reference, key) for reference, key in summaries]
    record = {"benchmark": "sampler_quality", "command": " ".join(["python", *sys.argv]),
              "host": machine_record(),  # its cpu_bf16_flags are the amx_bf16 / avx512_bf16 that lscpu shows
              "generator": {"run": str(run), "steps": gen.step, "checkpoint_id": gen.checkpoint_id,
                            "recipe": str(RECIPE.relative_to(ROOT)), "classifier_epochs": args.epochs,
                            **training_seconds(run, classifier)},
              "sample_settings": recipe.sample.model_dump(), "n_per_grade": args.n, "feature_dim": extractor.dim,
              "real_set": {"split": "train", "n": int(len(real_y)), "per_grade": np.bincount(real_y).tolist()},
              "metric_settings": {"kid_subsets": cfg.kid_subsets, "kid_subset_size": cfg.kid_subset_size,
                                  "fid_interval": f"2.5-97.5 percentile of {args.resamples} bootstrap resamples of "
                                                  "the generated images (within grades); real features fixed",
                                  "dfid_interval": f"same resamples, paired by seed: FID(config) - FID({REFERENCE}); dfid_ode: - FID({ODE_REFERENCE})",
                                  "kid_interval": "mean +- std over KID subsets (odmaug's kid_std)"},
              "results": results, "summaries": summaries}
    atomic_write_json(args.out, record)
    print_table(results, summaries)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
