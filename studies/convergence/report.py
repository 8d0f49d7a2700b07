"""``--report``: a markdown table per checkpoint multiple and a figure of the figures against
training wall time, from the study's JSON alone."""

from __future__ import annotations

from pathlib import Path


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _fid(row: dict) -> str:
    if row.get("fid") is None:
        return "too few"
    return f"{row['fid']:.1f} [{row['fid_lo']:.1f}, {row['fid_hi']:.1f}]" if "fid_lo" in row else f"{row['fid']:.1f}"


def checkpoint_row(name: str, entry: dict) -> str:
    """One table row: a run at one multiple."""
    ev = entry["evaluation"]
    ddim, unipc = ev["samplers"]["ddim50"], ev["samplers"]["unipc10"]
    fk, fq = ddim["fid_kid"], ddim["fidelity"]
    grades = fk["per_grade"]
    cells = [name, str(entry["steps"]), f"{entry['train_seconds'] / 60:.0f}", _fid(fk["overall"]),
             _num(1e3 * fk["overall"]["kid_mean"] if fk["overall"].get("kid_mean") is not None else None, ".1f"),
             _fid(unipc["fid_kid"]["overall"]), _num(ev["unipc_over_ddim_fid"]["overall"], ".2f"),
             _num(ddim["swd"]["overall"]["swd_x1e3"]), _num(unipc["swd"]["overall"]["swd_x1e3"]),
             f"{fq['qwk']:.3f} [{fq['qwk_ci95'][0]:.3f}, {fq['qwk_ci95'][1]:.3f}]",
             _num(unipc["fidelity"]["qwk"], ".3f"),
             *[_fid(grades[g]) if g < len(grades) else "–" for g in (3, 4)],
             *[_num(ddim["swd"]["per_grade"][g]["swd_x1e3"]) if g < len(grades) else "–" for g in (3, 4)]]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| run | steps | train min | FID DDIM-50 [95%] | KID x1e3 | FID UniPC-10 [95%] | UniPC/DDIM | SWD x1e3 DDIM | "
          "SWD x1e3 UniPC | fidelity QWK DDIM [95%] | QWK UniPC | FID g3 DDIM | FID g4 DDIM | SWD g3 | SWD g4 |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


BULK_HEADER = ("| run | steps | far share real | far share DDIM-50 | far share UniPC-10 | bulk FID DDIM-50 [95%] | "
               "bulk FID UniPC-10 [95%] | UniPC/DDIM bulk | bulk FID g3 DDIM / UniPC | bulk FID g4 DDIM / UniPC |\n"
               "|---|---|---|---|---|---|---|---|---|---|")


def bulk_row(name: str, entry: dict) -> str | None:
    """One row of the far-cluster table (None for an evaluation made before it existed)."""
    ev = entry["evaluation"]
    ddim, unipc = (ev["samplers"][s].get("bulk") for s in ("ddim50", "unipc10"))
    if ddim is None:
        return None
    pair = lambda g: f"{_num(ddim['per_grade'][g]['fid'])} / {_num(unipc['per_grade'][g]['fid'])}"  # noqa: E731
    cells = [name, str(entry["steps"]), f"{ddim['real_far_share']:.3f}", f"{ddim['generated_far_share']:.3f}",
             f"{unipc['generated_far_share']:.3f}", _fid(ddim["overall"]), _fid(unipc["overall"]),
             _num(ev["unipc_over_ddim_bulk_fid"]["overall"], ".2f"), pair(3), pair(4)]
    return "| " + " | ".join(cells) + " |"


def print_report(record: dict) -> None:
    """Markdown: the judge, the probes, then per multiple one row per run, and the eps diagnosis."""
    judge, probes = record.get("judge", {}), record.get("probes", {})
    flags = " ".join(record["host"].get("lscpu_bf16_flags") or ["no bf16 flags"])
    print(f"# Convergence at equal wall time ({flags}, torch {record['host'].get('torch')})")
    if judge:
        print(f"\njudge: {judge['model']} trained once on the real training split, test QWK {judge['test_qwk']:.3f}, "
              f"accuracy {judge['test_accuracy']:.3f}; real set {judge['real_set']['per_grade']} per grade")
    if "budget_s_1x" in probes:
        print(f"launcher {probes['launcher']}; 1x = {probes['budget_s_1x']:.0f} s of training "
              f"(baseline {probes['baseline_s_per_step']:.3f} s/step); cost ratios "
              + ", ".join(f"{k} {v:.3f}" for k, v in probes.get("cost_ratio", {}).items()))
    multiples = sorted({m for run in record["runs"].values() for m in run["checkpoints"]}, key=float)
    for m in multiples:
        print(f"\n## {m}x the baseline's wall time ({float(m) * probes.get('budget_s_1x', 0) / 60:.0f} min of training)\n")
        print(HEADER)
        for name, run in record["runs"].items():
            entry = run["checkpoints"].get(m)
            if entry and "evaluation" in entry:
                print(checkpoint_row(name, entry))
        rows = [bulk_row(name, run["checkpoints"][m]) for name, run in record["runs"].items()
                if "evaluation" in run["checkpoints"].get(m, {})]
        if any(rows):
            print(f"\nWithout the judge's far cluster (feature norm > {judge['far_cluster']['factor']:g}x the real median):\n")
            print(BULK_HEADER)
            print("\n".join(r for r in rows if r))
    print_diagnoses(record, multiples)


def print_diagnoses(record: dict, multiples: list[str]) -> None:
    """||eps_pred|| / ||eps|| (guided) per timestep bucket: one row per run and multiple."""
    rows = [(name, m, run["checkpoints"][m]["evaluation"]["eps_diagnosis"]) for m in multiples
            for name, run in record["runs"].items() if "evaluation" in run["checkpoints"].get(m, {})]
    if not rows:
        return
    buckets = rows[0][2]["buckets"]
    print("\n## Guided ||eps_pred|| / ||eps|| per timestep bucket (real training images; 1 = right size)\n")
    print("| run | x | " + " | ".join(f"t {b['t_lo']}-{b['t_hi']}" for b in buckets) + " |")
    print("|---|---|" + "---|" * len(buckets))
    for name, m, diag in rows:
        print(f"| {name} | {m} | " + " | ".join(f"{b['guided_norm_ratio']:.3f}" for b in diag["buckets"]) + " |")


def figure(record: dict, path: Path) -> Path | None:
    """FID (DDIM-50, UniPC-10), SWD and fidelity QWK against training wall time (the nominal budget,
    identical for every run by design), one line per run; None when nothing is evaluated yet."""
    from odmaug.figures import plt, save_figure

    def bulk(sampler: str):  # None for an evaluation made before the far cluster was set apart
        return lambda e: e["samplers"][sampler].get("bulk", {}).get("overall", {}).get("fid")

    panels = (("FID DDIM-50", lambda e: e["samplers"]["ddim50"]["fid_kid"]["overall"]["fid"]),
              ("FID UniPC-10", lambda e: e["samplers"]["unipc10"]["fid_kid"]["overall"]["fid"]),
              ("SWD x1e3 (DDIM-50)", lambda e: e["samplers"]["ddim50"]["swd"]["overall"]["swd_x1e3"]),
              ("bulk FID DDIM-50 (far cluster apart)", bulk("ddim50")),
              ("bulk FID UniPC-10 (far cluster apart)", bulk("unipc10")),
              ("grade fidelity QWK (DDIM-50)", lambda e: e["samplers"]["ddim50"]["fidelity"]["qwk"]))
    budget = record["probes"].get("budget_s_1x")
    if not budget or not any("evaluation" in c for r in record["runs"].values() for c in r["checkpoints"].values()):
        return None
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, (title, get) in zip(axes.flat, panels):
        for name, run in record["runs"].items():
            points = sorted((float(m) * budget / 60, get(c["evaluation"])) for m, c in run["checkpoints"].items()
                            if "evaluation" in c and get(c["evaluation"]) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", linestyle="--" if name.endswith("-dm") else "-", label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training wall time (min, equal for every run)")
        if "FID" in title:
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path)
