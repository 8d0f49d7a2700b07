"""``--ema-sweep RUN``: the EMA length chosen after training (EDM2's post-hoc idea, with the few
fixed decays ``train.ema_decays`` keeps). Every EMA of the run's last checkpoint (the primary
``train.ema_decay`` and each extra one) samples UniPC-10 on the same seeds and is judged as the
study judges a checkpoint (FID and bulk FID against the real TRAINING split, SWD, grade fidelity),
stored under ``ema_sweep`` in ``--out``. The judge sees no test image, so picking the decay by
these figures tunes nothing on a test split."""

from __future__ import annotations

import json
import numpy as np

from convergence import launch
from convergence.judge import judge_set, study_reference
from convergence.sampling import request, synthesize

SAMPLER = "unipc10"


def _row(decay: float, figures: dict, wall_s: float) -> dict:
    fk, bulk = figures["fid_kid"]["overall"], figures["bulk"]
    return {"decay": decay, "fid": fk["fid"], "fid_lo": fk["fid_lo"], "fid_hi": fk["fid_hi"],
            "bulk_fid": bulk["overall"]["fid"], "bulk_fid_lo": bulk["overall"].get("fid_lo"),
            "bulk_fid_hi": bulk["overall"].get("fid_hi"), "far_share": bulk["generated_far_share"],
            "swd_x1e3": figures["swd"]["overall"]["swd_x1e3"], "fidelity_qwk": figures["fidelity"]["qwk"],
            "bulk_fid_per_grade": [g["fid"] for g in bulk["per_grade"]], "sampling_wall_s": wall_s}


def ema_sweep(args, state: dict) -> dict:
    """Judge every EMA of ``args.ema_sweep`` (a run folder or a study run name); returns the record
    ``{"run", "step", "sampler", "n", "emas": [row per decay]}`` and stores it in ``state``."""
    from odmaug.diffusion import load_generator
    from odmaug.diffusion.checkpoint import read_pointer, stored_ema_decays

    run = launch.given_run(args.work, args.ema_sweep, "--ema-sweep")
    primary = load_generator(run, device="cpu")
    decays = [primary.recipe.train.ema_decay, *stored_ema_decays(read_pointer(run / "generator"))]
    ref = study_reference(args, state)
    labels = np.asarray(request(args.n, primary.num_classes)[0])
    rows = []
    for decay in sorted(decays):
        gen = load_generator(run, device="cpu", ema=decay)
        made = synthesize(gen, SAMPLER, args.n, args.work / "samples")  # cached per weights file
        rows.append(_row(decay, judge_set(ref, made["images"], labels, args), made["wall_s"]))
        r = rows[-1]
        print(f"  EMA {decay}: FID {r['fid']:.1f}, bulk FID {r['bulk_fid']:.1f} [{r['bulk_fid_lo']:.1f}, "
              f"{r['bulk_fid_hi']:.1f}], SWD {r['swd_x1e3']:.1f}e-3, fidelity QWK {r['fidelity_qwk']:.3f}", flush=True)
    record = {"run": run.name, "step": primary.step, "sampler": SAMPLER, "n": args.n, "emas": rows}
    state.setdefault("ema_sweep", {}).setdefault(run.name, {})[str(primary.step)] = record
    return record


def print_sweep(record: dict) -> None:
    print(f"\n{record['run']} at step {record['step']} ({record['sampler']}, {record['n']} images per grade)\n")
    print("| EMA decay | FID [95%] | bulk FID [95%] | far share | SWD x1e3 | fidelity QWK |\n|---|---|---|---|---|---|")
    for r in record["emas"]:
        print(f"| {r['decay']} | {r['fid']:.1f} [{r['fid_lo']:.1f}, {r['fid_hi']:.1f}] | {r['bulk_fid']:.1f} "
              f"[{r['bulk_fid_lo']:.1f}, {r['bulk_fid_hi']:.1f}] | {r['far_share']:.3f} | {r['swd_x1e3']:.1f} | "
              f"{r['fidelity_qwk']:.3f} |")
    print(json.dumps({"best_bulk_fid": min(record["emas"], key=lambda r: r["bulk_fid"])["decay"]}))
