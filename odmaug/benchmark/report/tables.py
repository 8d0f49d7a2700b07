"""The benchmark report's tables: rows shared by the terminal, ``report.md`` and ``report.html``.

Input is the benchmark's results dictionary (see :mod:`odmaug.benchmark.results`). A spread that measures
nothing (one seed, seeds that all agree, KID subsets that are always the whole set) is printed as
"–" with its reason, never as a tiny number (see :mod:`odmaug.metrics.spread`); counts of seeds and
images stand beside the figures they carry.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
from rich.table import Table

from odmaug.metrics.generative_table import KID_HEADER, KID_SCALE_NOTE, fid_marks, kid_cell, kid_footnotes, kid_text
from odmaug.metrics.spread import OMITTED_MARK, kid_spread_omitted
from odmaug.metrics.tail import TAIL_NOTE


def _marks(row: dict[str, Any]) -> str:
    """`` *``, `` ‡`` or `` *‡`` after a FID (see :func:`odmaug.metrics.generative_table.fid_marks`)."""
    marks = fid_marks(row)
    return f" {marks}" if marks else ""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{digits}f}"


def _signed(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}"


def _spread_reason(summary: dict[str, Any]) -> Optional[str]:
    """Why a :func:`~odmaug.metrics.classification.summarize_runs` summary has no spread; None if it has one.

    Judged from ``n`` and ``std`` when ``spread_omitted`` is missing (results.json written before it
    existed, where equal seeds gave std 0.0 and a zero-width interval).
    """
    if summary.get("spread_omitted"):
        return summary["spread_omitted"]
    n = int(summary.get("n") or 0)
    if n < 2:
        return "1 seed" if n else "no seed has this figure"
    return None if summary.get("std") else ("both seeds equal" if n == 2 else f"all {n} seeds equal")


def _pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± std`` over seeds, or ``mean ± – (reason)`` where the spread is degenerate."""
    if not summary or summary.get("mean") is None:
        return "–"
    reason = _spread_reason(summary)
    if reason:
        return f"{_fmt(summary['mean'], digits)} ± – ({reason})"
    return f"{_fmt(summary['mean'], digits)} ± {_fmt(summary['std'], digits)}"


def _interval(d: dict[str, Any]) -> str:
    """A 95% interval ``[low, high]`` of a paired difference, or ``[–, –] (reason)``."""
    reason = _spread_reason(d)
    if reason:
        return f"[–, –] ({reason})"
    return f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}]"


def _kid_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``kid_std_omitted`` set, judged from the sizes for results.json from before it existed."""
    if "kid_std_omitted" in row or row.get("kid_subset_size") is None:
        return row
    # The subset count was not recorded per row: >= 2 is assumed, the sizes alone decide.
    reason = kid_spread_omitted(row["n_real"], row["n_generated"], row["kid_subset_size"], 2)
    return {**row, "kid_std_omitted": reason, "kid_std": None if reason else row.get("kid_std")}


def _kid(value: Any, digits: int = 3) -> str:
    # × 10³ in significant digits, as in `odmaug metrics` (the header names the scale)
    return "–" if value is None else kid_text(value, digits)


def _boot(results: dict[str, Any], arm: str, ref: str, metric: str) -> Optional[dict[str, Any]]:
    """The seeds x images bootstrap summary of ``arm - ref`` for ``metric`` (None: not computed)."""
    return results.get("bootstrap", {}).get("paired", {}).get(arm, {}).get(f"vs_{ref}", {}).get(metric)


def boot_interval(b: Optional[dict[str, Any]]) -> str:
    """``+0.021 [-0.030, +0.072]`` from a :mod:`odmaug.metrics.bootstrap` summary of a difference.

    A figure equal in both arms in every resample (e.g. top-grade recall 0 in both; it does not
    mean the predictions are identical) reads "0 [0, 0] (equal in every resample)", without an MDE.
    """
    if not b or b.get("estimate") is None:
        return "–"
    if b.get("identical"):
        return "0 [0, 0] (equal in every resample)"
    if b.get("ci_low") is None:
        return f"{_signed(b['estimate'])} [–, –] ({b.get('resamples', 0)} defined resamples)"
    return f"{_signed(b['estimate'])} [{_signed(b['ci_low'])}, {_signed(b['ci_high'])}]"


def boot_mde(b: Optional[dict[str, Any]]) -> str:
    """The minimum detectable effect (80% power, two-sided 5%), or "–" (none, or a figure without spread)."""
    if not b or b.get("mde") is None or b.get("identical"):
        return "–"
    return _fmt(b["mde"])


def boot_size(results: dict[str, Any]) -> str:
    """``5 seeds × 400 images`` behind the bootstrap figures, or "–"."""
    boot = results.get("bootstrap") or {}
    if "n_images" not in boot:
        return "–"
    return f"{boot['n_seeds']} seed{'s' * (boot['n_seeds'] != 1)} × {boot['n_images']} images"


def arm_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-arm table: arm | QWK mean ± std | accuracy | top-grade recall | ΔQWK vs real
    (t-interval over seeds) | ΔQWK vs real (bootstrap over seeds and test images) | its MDE."""
    rows = []
    top = results["num_classes"] - 1
    for arm, data in results["arms"].items():
        summary = data["summary"]
        delta = results.get("paired", {}).get(arm, {}).get("vs_real", {}).get("qwk")
        no_delta = arm == "real" or not delta or delta.get("mean") is None
        boot = _boot(results, arm, "real", "qwk")
        rows.append([arm, _pm(summary.get("qwk")), _pm(summary.get("accuracy")), _pm(summary.get(f"recall_grade_{top}")),
                     "–" if no_delta else f"{_signed(delta['mean'])} {_interval(delta)}", boot_interval(boot), boot_mde(boot)])
    return rows


ARM_HEADER = ["arm", "QWK mean ± std", "accuracy", "top-grade recall", "Δ QWK vs real [95% CI, seeds]",
              "Δ QWK vs real [95% CI, seeds × images]", "MDE"]


def arm_table(results: dict[str, Any]) -> Table:
    """The terminal's closing table."""
    seeds = results.get("seeds", [])
    size = boot_size(results)
    folds = results.get("bootstrap", {}).get("folds")
    tested = f"{folds}-fold cross-validation, test parts pooled" if folds else "test split"
    title = f"Severity classifier per arm ({tested}, {len(seeds)} seed(s)" + ("" if size == "–" else f"; bootstrap {size}") + ")"
    caption = "MDE: smallest Δ QWK detectable with 80% power (two-sided 5%) on this many seeds and test images"
    if len(seeds) < 2:  # one seed has no spread: the interval cannot count seed-to-seed variation
        caption += (f"\nwith {len(seeds)} seed(s) the seeds × images interval counts the test images only "
                    "(seed-to-seed variation is missing): use 3 or more seeds")
    elif len(seeds) < 3:
        caption += "\nwith 2 seeds the interval's t quantile has 1 degree of freedom (12.7): use 3 or more seeds"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, name in enumerate(ARM_HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in arm_rows(results):
        table.add_row(*row)
    return table


def paired_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: arm | against | metric | mean paired difference | 95% CI (seeds) | seeds (pairs behind
    it) | difference [95% CI] over seeds × test images | MDE | seeds × images behind it."""
    rows = []
    size = boot_size(results)
    for arm, pairs in results.get("paired", {}).items():
        for ref, metrics in pairs.items():
            for metric in ("qwk", "accuracy", "balanced_accuracy", f"recall_grade_{results['num_classes'] - 1}"):
                d = metrics.get(metric)
                if d and d.get("mean") is not None:
                    b = _boot(results, arm, ref.removeprefix("vs_"), metric)
                    rows.append([arm, ref.replace("vs_", "vs "), metric, _signed(d["mean"]), _interval(d), str(d.get("n", "?")),
                                 boot_interval(b), boot_mde(b), size if b else "–"])
    return rows


PAIRED_HEADER = ["arm", "against", "metric", "mean paired difference", "95% CI (seeds)", "seeds",
                 "difference [95% CI, seeds × images]", "MDE (80% power)", "bootstrap over"]


def features_label(results: dict[str, Any], extractor: str) -> str:
    """``domain (judge QWK 0.545)``: the domain features carry their judge's own test QWK."""
    qwk = (results.get("judge") or {}).get("test_qwk")
    return extractor if extractor != "domain" or qwk is None else f"domain (judge QWK {_fmt(qwk)})"


def generator_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: generator | features | FID | KID ×10³ | precision | recall | n real/gen | grade-fidelity QWK (n).

    Overall figures compare the real training split with a generated subset of the same grade mix;
    grade fidelity is the domain classifier on every generated image (n of them). KID ± is
    omitted (``†``) where the subsets cannot vary: :func:`generator_footnotes` says why.
    """
    rows = []
    for name, gen in results.get("generators", {}).items():
        fidelity = gen.get("fidelity", {}).get("qwk")
        fidelity_n = gen.get("n_generated")
        for extractor, metrics in gen.get("metrics", {}).items():
            o = _kid_row(metrics.get("overall", {}))
            if o.get("too_few"):
                fid, kid = "too few", "–"
            else:
                fid = _fmt(o.get("fid"), 2) + _marks(o)
                kid = kid_cell(o) if o.get("kid_mean") is not None else f"– {OMITTED_MARK}"
            rows.append([name, features_label(results, extractor), fid, kid, _fmt(o.get("precision")), _fmt(o.get("recall")),
                         f"{_fmt(o.get('n_real'))}/{_fmt(o.get('n_generated'))}",
                         _fmt(fidelity) + ("" if fidelity is None or fidelity_n is None else f" (n={fidelity_n})")])
    return rows


def generator_footnotes(results: dict[str, Any]) -> list[str]:
    """Why KID ± is omitted in :func:`generator_rows`, per reason (``† KID ± omitted for
    <gen/features>: ...``), and what ``‡`` means where a FID carries it."""
    rows = [{**_kid_row(g["metrics"][e].get("overall", {})), "grade": f"{n}/{e}"}
            for n, g in results.get("generators", {}).items() for e in g.get("metrics", {})]
    every = [r for g in results.get("generators", {}).values() for m in g.get("metrics", {}).values()
             for r in [m.get("overall", {}), *m.get("per_grade", [])]]
    tail = [TAIL_NOTE] if any(r.get("fid_tail_dominated") for r in every) else []
    return kid_footnotes([r for r in rows if "kid_mean" in r]) + tail


def per_grade_generator_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: generator | features | grade | n real/gen | FID | KID ×10³ | precision | recall | fidelity recall."""
    rows = []
    for name, gen in results.get("generators", {}).items():
        recalls = gen.get("fidelity", {}).get("recall_per_grade", [])
        for extractor, metrics in gen.get("metrics", {}).items():
            for r in metrics.get("per_grade", []):
                g = int(r["grade"])
                if r.get("too_few"):
                    fid = kid = prec = rec = "too few"
                else:
                    fid = _fmt(r.get("fid"), 2) + _marks(r)
                    kid, prec, rec = _kid(r.get("kid_mean")), _fmt(r.get("precision")), _fmt(r.get("recall"))
                rows.append([name, features_label(results, extractor), str(g), f"{_fmt(r.get('n_real'))}/{_fmt(r.get('n_generated'))}", fid, kid,
                             prec, rec, _fmt(recalls[g] if g < len(recalls) else None)])
    return rows


PER_GRADE_HEADER = ["generator", "features", "grade", "n real/gen", "FID", KID_HEADER, "precision", "recall",
                    "fidelity recall"]


GENERATOR_HEADER = ["generator", "features", "FID", KID_HEADER, "precision", "recall", "n real/gen", "grade-fidelity QWK"]


def generator_table(results: dict[str, Any]) -> Table:
    """The terminal's generator table, KID footnotes as its caption."""
    which = " of fold 0 (each fold trains its own)" if results.get("protocol") == "cv" else ""
    large = any(("×10" in row[3]) for row in generator_rows(results))  # a KID written as a power of ten
    caption = generator_footnotes(results) + ([KID_SCALE_NOTE] if large else [])
    table = Table(title=f"Generators{which} (* FID on a small set is biased upward: compare KID)", title_justify="left",
                  caption="\n".join(caption) or None, caption_justify="left")
    for i, name in enumerate(GENERATOR_HEADER):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in generator_rows(results):
        table.add_row(*row)
    return table


def detail_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: arm | QWK | accuracy | macro-F1 | balanced acc. | recall per grade, each mean ± std over seeds."""
    keys = ["qwk", "accuracy", "macro_f1", "balanced_accuracy"] + [f"recall_grade_{g}" for g in range(results["num_classes"])]
    return [[arm] + [_pm(data["summary"].get(k)) for k in keys] for arm, data in results["arms"].items()]


TRANSLATION_HEADER = ["pass", "arm", "val QWK per strength (first seed)", "chosen strength", "rule"]


def translation_rows(results: dict[str, Any]) -> list[list[str]]:
    """Per pass and translation arm: each candidate strength's validation QWK and the choice."""
    rows = []
    for name, arms in (results.get("translation") or {}).items():
        for arm, record in arms.items():
            scores = ", ".join(f"{s}: {_fmt(q)}" for s, q in record.get("val_qwk", {}).items()) or "–"
            rows.append([name, arm, scores, f"{record['chosen']:g}", record.get("rule", "")])
    return rows
