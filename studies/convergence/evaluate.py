"""Everything measured at one checkpoint of one run: both samplers' sets judged, the deterministic /
stochastic FID gap, a sample grid and the eps-norm diagnosis."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from convergence.diagnose import eps_diagnosis
from convergence.judge import FAR_FACTOR, Reference, judge_set
from convergence.options import SAMPLERS
from convergence.sampling import grid, request, synthesize

LABELS = {"ddim50": "DDIM-50", "unipc10": "UniPC-10"}


def protocol(args) -> dict:
    """The settings an evaluation depends on; a stored evaluation is reused only when they match."""
    return {"n": args.n, "kid_subset_size": args.kid_subset_size, "resamples": args.resamples,
            "swd_per_image": args.swd_per_image, "swd_directions": args.swd_directions, "samplers": SAMPLERS,
            "diagnose_per_bucket": args.diagnose_per_bucket, "buckets": args.buckets, "far_factor": FAR_FACTOR}


def ratio(a, b):
    """a / b, None where either is missing (a grade with too few images)."""
    return a / b if a is not None and b not in (None, 0) else None


def fid_gap(figures: dict, key: str = "fid_kid") -> dict:
    """FID(UniPC-10) / FID(DDIM-50), overall and per grade (``key`` "bulk": without the judge's far
    cluster): > 1 means the deterministic solver lands further from the real set than stochastic
    DDIM on the same weights and seeds."""
    det, sto = figures["unipc10"][key], figures["ddim50"][key]
    return {"overall": ratio(det["overall"]["fid"], sto["overall"]["fid"]),
            "per_grade": [ratio(d["fid"], s["fid"]) for d, s in zip(det["per_grade"], sto["per_grade"])]}


def evaluate_checkpoint(run: Path, name: str, multiple: str, ref: Reference, args) -> dict:
    """Synthesize ``args.n`` images per grade with every sampler from the run's EMA weights, judge
    them, draw the grid ``work/grids/<name>-x<multiple>-step<step>.png`` and diagnose eps."""
    from odmaug.diffusion import load_generator

    gen = load_generator(run, device="cpu")
    labels = np.asarray(request(args.n, gen.num_classes)[0])
    sets, figures = {}, {}
    for sampler in SAMPLERS:
        made = synthesize(gen, sampler, args.n, args.work / "samples")
        sets[LABELS[sampler]] = made["images"]
        t0 = time.perf_counter()
        figures[sampler] = {"sampling_wall_s": made["wall_s"], **judge_set(ref, made["images"], labels, args)}
        figures[sampler]["judging_wall_s"] = time.perf_counter() - t0
        fk = figures[sampler]["fid_kid"]["overall"]
        print(f"  {name} {multiple}x {LABELS[sampler]}: FID {fk['fid']:.1f} [{fk['fid_lo']:.1f}, {fk['fid_hi']:.1f}], "
              f"SWD {figures[sampler]['swd']['overall']['swd_x1e3']:.1f}e-3, fidelity QWK "
              f"{figures[sampler]['fidelity']['qwk']:.3f}, bulk FID {figures[sampler]['bulk']['overall']['fid']:.1f}, far share "
              f"{figures[sampler]['bulk']['generated_far_share']:.3f} (sampling {made['wall_s']:.0f} s)", flush=True)
    path = args.work / "grids" / f"{name}-x{multiple}-step{gen.step:06d}.png"
    grid(sets, args.n, args.grid_per_grade, path, f"{name} at {multiple}x (step {gen.step}, EMA): rows DDIM-50 / UniPC-10")
    diagnosis = eps_diagnosis(gen, ref.real_images, ref.real_labels, args.buckets, args.diagnose_per_bucket)
    return {"step": gen.step, "checkpoint_id": gen.checkpoint_id, "prediction": gen.schedule.prediction,
            "samplers": figures, "unipc_over_ddim_fid": fid_gap(figures),
            "unipc_over_ddim_bulk_fid": fid_gap(figures, "bulk"), "grid": str(path),
            "eps_diagnosis": diagnosis, "protocol": protocol(args)}


def rejudge(entry: dict, ref: Reference, args) -> bool:
    """Judge a stored evaluation's cached sample sets again under today's protocol (same images,
    same seeds: a figure added to the judge reaches checkpoints whose weights were trained on
    since); its eps diagnosis and grid stay. False (unchanged) when a set is not cached."""
    ev = entry["evaluation"]
    paths = {s: args.work / "samples" / f"{ev['checkpoint_id']}-{s}-n{args.n}.npz" for s in SAMPLERS}
    if ev.get("protocol", {}).get("n") != args.n or not all(p.exists() for p in paths.values()):
        return False
    labels = np.asarray(request(args.n, ref.num_classes)[0])
    for sampler, path in paths.items():
        images = torch.from_numpy(np.load(path)["images"])
        ev["samplers"][sampler] = {"sampling_wall_s": ev["samplers"][sampler]["sampling_wall_s"],
                                   **judge_set(ref, images, labels, args)}
    ev["unipc_over_ddim_fid"], ev["unipc_over_ddim_bulk_fid"] = fid_gap(ev["samplers"]), fid_gap(ev["samplers"], "bulk")
    ev["protocol"] = protocol(args) | {"rejudged_from_cache": True}
    return True
