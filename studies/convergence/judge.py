"""One fixed judge for every checkpoint: a classifier trained once on the real training split gives
the domain features (FID, KID) and the grade-fidelity predictions; the real training images give
the SWD references (overall and per grade).

Figures of one generated set (uint8 images, intended grades):

* FID and KID overall and per grade of the domain features against the real TRAINING split
  (:func:`odmaug.metrics.generative.metrics_from_features`); FID's 2.5-97.5 percentile interval over
  bootstrap resamples of the generated images within grades, KID mean +- subset std
  (studies/sampler_quality.py's ``fid_interval`` and ``with_intervals``). The generated set has
  ``n`` images per grade, the real one RetinaMNIST's mix: overall figures judge the mix as well
  (the same for every run).
* SWD (odmaug.metrics.swd) overall and per grade, x 1e3 as ProGAN prints it.
* Grade fidelity: the judge's QWK and accuracy between intended and predicted grade, with 95%
  percentile intervals over images resampled within intended grades.
* The judge's far cluster, apart: real images whose feature norm exceeds ``FAR_FACTOR`` times the
  real median. On RetinaMNIST these are 16 of the 1,080 training images (borderless, zoomed-in
  photographs; norms ~165 against a median of 20), and their shift alone is worth ~350 FID: a set of
  64 images per grade that happens to hold a few of them scores FID ~30, one that holds none ~380,
  whatever the rest looks like. So each set also gets its share of far images (real: 1.5%) and the
  FID of the bulk (both sets without their far images), with the same bootstrap intervals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from convergence.launch import odmaug
from sampler_quality import fid_interval, with_intervals


@dataclass
class Reference:
    """The judge and the real training split it compares against."""

    extractor: object  # odmaug.metrics.features.AdaptedExtractor around the judge's ClassifierFeatures
    model: torch.nn.Module  # the judge (eval mode), for its predictions
    meta: object  # its odmaug.classify.models.ClassifierMeta (input size, normalisation)
    real_images: torch.Tensor  # uint8 [N, 3, S, S]
    real_labels: np.ndarray  # int [N]
    real_x: np.ndarray  # domain features [N, D]
    swd_refs: dict  # "all" or grade -> odmaug.metrics.swd.SWDReference
    num_classes: int
    record: dict  # what the JSON says about the judge
    far_cut: float  # feature norm beyond which an image is in the judge's far cluster


FAR_FACTOR = 4.0
"""Far cluster: feature norm above 4x the real training images' median. Fixed from the real
training split's norms alone (bimodal on RetinaMNIST: nothing between 32 and 162, median 20)."""


def trained_judge(work: Path, recipe: Path, epochs: int, threads: int) -> Path:
    """``work/judge``: ``odmaug train-classifier`` on the real data with the recipe's classifier
    (quickstart: resnet18), in one process of ``threads`` threads; trained once and reused."""
    folder = work / "judge"
    if not (folder / "model.safetensors").exists():
        odmaug("threads", ["train-classifier", "-r", str(recipe), "--out", str(folder), "--device", "cpu",
                           "--set", f"classifier.epochs={epochs}"], work / "judge.log", threads=threads)
    return folder


def build_reference(recipe, judge: Path, per_image: int) -> Reference:
    """Features, images and SWD references of the recipe's real training split under ``judge``."""
    from odmaug.config import MetricsConfig
    from odmaug.data import load_table, load_uint8
    from odmaug.metrics.features import build_extractor
    from odmaug.metrics.swd import swd_reference
    from odmaug.metrics.tail import real_tail_share

    extractor = build_extractor(f"domain:{judge}", MetricsConfig(), "cpu")
    train = load_table(recipe.data).split("train")
    images = load_uint8(train, recipe.data.image_size, recipe.data.crop_box)
    labels = np.asarray(train.labels)
    real_x = extractor(images).numpy()
    refs = {"all": swd_reference(images, per_image=per_image)}
    refs |= {g: swd_reference(images[torch.from_numpy(labels == g)], per_image=per_image)
             for g in range(recipe.data.num_classes)}
    base = getattr(extractor, "base", extractor)  # the ClassifierFeatures inside the adapter
    metrics = json.loads((judge / "metrics.json").read_text())
    import hashlib

    digest = hashlib.sha256((judge / "model.safetensors").read_bytes()).hexdigest()
    record = {"folder": str(judge), "model": base.meta.model, "feature_dim": extractor.dim, "weights_sha256": digest,
              "test_qwk": metrics["test"]["qwk"], "test_accuracy": metrics["test"]["accuracy"],
              "real_set": {"split": "train", "n": int(len(labels)),
                           "per_grade": np.bincount(labels, minlength=recipe.data.num_classes).tolist()}}
    norms = np.linalg.norm(real_x, axis=1)
    cut = FAR_FACTOR * float(np.median(norms))
    record["far_cluster"] = {"factor": FAR_FACTOR, "cut": cut, "real_per_grade":
                             np.bincount(labels[norms > cut], minlength=recipe.data.num_classes).tolist(),
                             "real_norm_median": float(np.median(norms)),
                             "far_norm_median": float(np.median(norms[norms > cut])) if (norms > cut).any() else None,
                             "real_tail_share": real_tail_share(real_x)}  # odmaug.metrics.tail: 2% of the images
    return Reference(extractor, base.model, base.meta, images, labels, real_x, refs, recipe.data.num_classes, record, cut)


def fid_kid(ref: Reference, gen_x: np.ndarray, gen_y: np.ndarray, kid_subset_size: int, resamples: int) -> dict:
    """Overall and per-grade FID [bootstrap interval] and KID [mean +- std] of domain features."""
    from odmaug.config import MetricsConfig
    from odmaug.metrics.generative import metrics_from_features

    cfg = MetricsConfig(kid_subset_size=kid_subset_size, min_per_grade=min(20, len(gen_y) // ref.num_classes))
    real = (ref.real_x, ref.real_labels)
    out = metrics_from_features(*real, gen_x, gen_y, ref.num_classes, cfg, seed=0, extractor="domain")

    def interval(row: dict, grade, seed: int) -> dict:  # a grade with too few images has no figures to bound
        return row if row["too_few"] else with_intervals(row, fid_interval(real, gen_x, gen_y, {}, grade, resamples, seed))

    return {"overall": interval(out["overall"], None, 0),
            "per_grade": [interval(row, row["grade"], 1 + row["grade"]) for row in out["per_grade"]]}


def study_reference(args, state: dict) -> Reference:
    """The study's judge (trained once, ``work/judge``) and its reference, checked against the judge
    the stored figures came from and recorded in ``state["judge"]``; writes the far-cluster grid."""
    from odmaug.config import load_recipe

    judge = trained_judge(args.work, args.recipe, args.judge_epochs, args.threads)
    ref = build_reference(load_recipe(args.recipe, ["device=cpu"]), judge, args.swd_per_image)
    same_judge(state.get("judge", {}), ref.record)
    state["judge"] = ref.record | {"epochs": args.judge_epochs}
    far_cluster_grid(ref, args.work / "grids" / "judge-far-cluster.png")
    return ref


def far_cluster_grid(ref: Reference, path: Path, per_row: int = 12) -> Path:
    """The real training images of largest, smallest and median judge feature norm, a row each
    (docs/figures/judge-far-cluster.png)."""
    from odmaug.figures import grade_grid

    norms = np.linalg.norm(ref.real_x, axis=1)
    order = np.argsort(-norms)
    median = np.argsort(np.abs(norms - np.median(norms)))[:per_row]
    rows = [ref.real_images[order[:per_row]], ref.real_images[order[-per_row:]], ref.real_images[median]]
    return grade_grid(rows, path, row_labels=["largest norm", "smallest norm", "median norm"],
                      title=f"judge feature norm (far cluster: above {ref.far_cut:.0f})")


def bulk_fid(ref: Reference, gen_x: np.ndarray, gen_y: np.ndarray, resamples: int) -> dict:
    """The far cluster's share in the real and the generated set (overall and per grade), and FID
    [bootstrap interval] overall and per grade between the two sets without their far images."""
    from odmaug.metrics.generative import fid_from_features

    real_far = np.linalg.norm(ref.real_x, axis=1) > ref.far_cut
    gen_far = np.linalg.norm(gen_x, axis=1) > ref.far_cut
    real = (ref.real_x[~real_far], ref.real_labels[~real_far])
    gx, gy = gen_x[~gen_far], gen_y[~gen_far]

    def row(grade) -> dict:
        rx = real[0] if grade is None else real[0][real[1] == grade]
        kept = gx if grade is None else gx[gy == grade]
        if min(len(rx), len(kept)) < 2:
            return {"fid": None, "n_generated": int(len(kept))}
        interval = fid_interval(real, gx, gy, {}, grade, resamples, 0 if grade is None else 1 + grade)
        return {"fid": fid_from_features(rx, kept), "n_generated": int(len(kept)), **{k: float(v) for k, v in interval.items()}}

    grades = range(ref.num_classes)
    return {"real_far_share": float(real_far.mean()), "generated_far_share": float(gen_far.mean()),
            "generated_far_per_grade": [int(gen_far[gen_y == g].sum()) for g in grades],
            "overall": row(None), "per_grade": [row(g) for g in grades]}


def swd_figures(ref: Reference, images: torch.Tensor, labels: np.ndarray, directions: int) -> dict:
    """SWD x 1e3 (mean over levels, and per level) overall and per grade; seed 0 for every set, so
    every run's set is projected on the same directions."""
    from odmaug.metrics.swd import swd

    def one(reference, subset) -> dict:
        out = swd(reference, subset, directions=directions, seed=0)
        return {"swd_x1e3": 1e3 * out["mean"], "levels_x1e3": {str(k): 1e3 * v for k, v in out["levels"].items()}}

    return {"overall": one(ref.swd_refs["all"], images),
            "per_grade": [one(ref.swd_refs[g], images[torch.from_numpy(labels == g)]) for g in range(ref.num_classes)]}


def fidelity(ref: Reference, images: torch.Tensor, labels: np.ndarray, resamples: int) -> dict:
    """The judge's QWK / accuracy / per-grade recall on generated images against their intended grades."""
    from odmaug.classify.predict import predict_logits
    from odmaug.metrics.bootstrap import paired_bootstrap
    from odmaug.metrics.classification import quadratic_weighted_kappa

    pred = predict_logits(ref.model, ref.meta, images, torch.device("cpu")).argmax(1).numpy()
    boot = paired_bootstrap({"generated": pred[None]}, labels, ref.num_classes, metrics=("qwk", "accuracy"), refs=(),
                            n_boot=resamples, seed=0, strata=labels)["arms"]["generated"]
    recall = [float((pred[labels == g] == g).mean()) for g in range(ref.num_classes)]
    return {"qwk": float(quadratic_weighted_kappa(labels, pred, ref.num_classes)),
            "accuracy": float((pred == labels).mean()), "recall_per_grade": recall,
            **{f"{m}_ci95": [boot[m]["ci_low"], boot[m]["ci_high"]] for m in ("qwk", "accuracy")},
            "predicted_per_grade": np.bincount(pred, minlength=ref.num_classes).tolist()}


def judge_set(ref: Reference, images: torch.Tensor, labels: np.ndarray, args) -> dict:
    """Every figure of one generated set (see the module docstring)."""
    gen_x = ref.extractor(images).numpy()
    return {"fid_kid": fid_kid(ref, gen_x, labels, args.kid_subset_size, args.resamples),
            "bulk": bulk_fid(ref, gen_x, labels, args.resamples),
            "swd": swd_figures(ref, images, labels, args.swd_directions),
            "fidelity": fidelity(ref, images, labels, args.resamples)}


def same_judge(stored: dict, new: dict) -> None:
    """A judge retrained in a new work folder must be the one the stored checkpoints were judged
    by (same test QWK and accuracy, and the same weights' digest where recorded): FIDs from two
    judges' features are not comparable."""
    keys = [k for k in ("test_qwk", "test_accuracy", "weights_sha256") if k in stored and k in new]
    if differ := [k for k in keys if stored[k] != new[k]]:
        raise SystemExit(f"the judge differs from the stored study's ({', '.join(f'{k}: {stored[k]} vs {new[k]}' for k in differ)}): "
                         "its figures would not be comparable; use another --out")
