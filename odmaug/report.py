"""The benchmark report: terminal tables, figures, ``report.md`` and a self-contained ``report.html``.

Input is the benchmark's results dictionary (see :mod:`odmaug.benchmark`); nothing here trains or
measures, so a report can be rebuilt from ``results.json`` alone.
"""

from __future__ import annotations

import base64
import os
import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.table import Table  # noqa: E402

from odmaug.figures import save_figure  # noqa: E402
from odmaug.runs import atomic_write_text  # noqa: E402


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(value)
    return f"{value:.{digits}f}"


def _pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    if not summary:
        return "–"
    if summary.get("n", 1) > 1 and summary.get("std") is not None:
        return f"{_fmt(summary['mean'], digits)} ± {_fmt(summary['std'], digits)}"
    return _fmt(summary.get("mean"), digits)


def _signed(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}"


# --------------------------------------------------------------------------------------------------
# Tables


def arm_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the per-arm table: arm | QWK mean ± std | accuracy | top-grade recall | ΔQWK vs real."""
    rows = []
    top = results["num_classes"] - 1
    for arm, data in results["arms"].items():
        summary = data["summary"]
        delta = results.get("paired", {}).get(arm, {}).get("vs_real", {}).get("qwk")
        top_recall = summary.get(f"recall_grade_{top}")
        rows.append(
            [
                arm,
                _pm(summary.get("qwk")),
                _pm(summary.get("accuracy")),
                _pm(top_recall),
                "–" if arm == "real" or not delta else f"{_signed(delta['mean'])} [{_signed(delta['ci_low'])}, {_signed(delta['ci_high'])}]",
            ]
        )
    return rows


ARM_HEADER = ["arm", "QWK mean ± std", "accuracy", "top-grade recall", "Δ QWK vs real [95% CI]"]


def arm_table(results: dict[str, Any]) -> Table:
    """The terminal's closing table."""
    seeds = results.get("seeds", [])
    table = Table(title=f"Severity classifier per arm (test split, {len(seeds)} seed(s))", title_justify="left")
    for i, name in enumerate(ARM_HEADER):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in arm_rows(results):
        table.add_row(*row)
    return table


def generator_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: generator | features | FID | KID | precision | recall | n real/gen | grade-fidelity QWK.

    Overall figures compare the real training split with a generated subset of the same grade mix.
    """
    rows = []
    for name, gen in results.get("generators", {}).items():
        fidelity = gen.get("fidelity", {}).get("qwk")
        for extractor, metrics in gen.get("metrics", {}).items():
            o = metrics.get("overall", {})
            if o.get("too_few"):
                fid, kid = "too few", "–"
            else:
                fid = _fmt(o.get("fid"), 2) + (" *" if o.get("fid_small_set") else "")
                kid = f"{_fmt(o.get('kid_mean'), 4)} ± {_fmt(o.get('kid_std'), 4)}"
            rows.append([name, extractor, fid, kid, _fmt(o.get("precision")), _fmt(o.get("recall")),
                         f"{_fmt(o.get('n_real'))}/{_fmt(o.get('n_generated'))}", _fmt(fidelity)])
    return rows


def per_grade_generator_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows: generator | features | grade | n real/gen | FID | KID | precision | recall | fidelity recall."""
    rows = []
    for name, gen in results.get("generators", {}).items():
        recalls = gen.get("fidelity", {}).get("recall_per_grade", [])
        for extractor, metrics in gen.get("metrics", {}).items():
            for r in metrics.get("per_grade", []):
                g = int(r["grade"])
                if r.get("too_few"):
                    fid = kid = prec = rec = "too few"
                else:
                    fid = _fmt(r.get("fid"), 2) + (" *" if r.get("fid_small_set") else "")
                    kid, prec, rec = _fmt(r.get("kid_mean"), 4), _fmt(r.get("precision")), _fmt(r.get("recall"))
                rows.append([name, extractor, str(g), f"{_fmt(r.get('n_real'))}/{_fmt(r.get('n_generated'))}", fid, kid,
                             prec, rec, _fmt(recalls[g] if g < len(recalls) else None)])
    return rows


PER_GRADE_HEADER = ["generator", "features", "grade", "n real/gen", "FID", "KID", "precision", "recall", "fidelity recall"]


GENERATOR_HEADER = ["generator", "features", "FID", "KID", "precision", "recall", "n real/gen", "grade-fidelity QWK"]


def generator_table(results: dict[str, Any]) -> Table:
    table = Table(title="Generators (* FID on a small set is biased upward: compare KID)", title_justify="left")
    for i, name in enumerate(GENERATOR_HEADER):
        table.add_column(name, justify="left" if i < 2 else "right")
    for row in generator_rows(results):
        table.add_row(*row)
    return table


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Figures


def _save(fig: plt.Figure, path: Path) -> Path:
    return save_figure(fig, path, dpi=110)


def arm_metric_figure(results: dict[str, Any], path: Path) -> Path:
    """QWK and accuracy per arm: mean with 95% interval, and each seed as a dot."""
    arms = list(results["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.3 * len(arms), 3.4))
    for ax, metric in zip(axes, ("qwk", "accuracy")):
        for i, arm in enumerate(arms):
            data = results["arms"][arm]
            s = data["summary"].get(metric, {})
            mean = s.get("mean", float("nan"))
            low, high = s.get("ci_low", mean), s.get("ci_high", mean)
            ax.bar(i, mean, color=f"C{i}", alpha=0.75)
            if s.get("n", 1) > 1:
                ax.errorbar(i, mean, yerr=[[mean - low], [high - mean]], color="black", capsize=4)
            values = [seed[metric] for seed in data["seeds"].values()]
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=20)
        ax.set_title(metric.upper() if metric == "qwk" else metric)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def per_grade_fid_figure(results: dict[str, Any], extractor: str, path: Path) -> Path | None:
    """Per-grade FID bars, one bar per generator (the paper's Fig. 4, DM vs ODM)."""
    gens = {n: g["metrics"][extractor] for n, g in results.get("generators", {}).items() if extractor in g.get("metrics", {})}
    if not gens:
        return None
    num_classes = results["num_classes"]
    width = 0.8 / len(gens)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * num_classes, 3.4))
    for j, (name, metrics) in enumerate(gens.items()):
        by_grade = {int(r["grade"]): r for r in metrics.get("per_grade", [])}
        fids = [np.nan if by_grade.get(g, {}).get("too_few") or by_grade.get(g, {}).get("fid") is None else by_grade[g]["fid"]
                for g in range(num_classes)]
        ax.bar(np.arange(num_classes) + (j - (len(gens) - 1) / 2) * width, fids, width, label=name)
    ax.set_xticks(range(num_classes), [f"grade {g}" for g in range(num_classes)])
    ax.set_ylabel(f"FID ({extractor} features)")
    ax.set_title("Per-grade FID (lower is better)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def confusion_figure(results: dict[str, Any], path: Path) -> Path:
    """One confusion matrix per arm (test split, summed over seeds, rows normalised)."""
    arms = list(results["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(2.8 * len(arms), 2.9), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        matrices = [np.asarray(s["confusion"]) for s in results["arms"][arm]["seeds"].values()]
        total = np.sum(matrices, axis=0)
        norm = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (r, c), v in np.ndenumerate(total):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=7, color="white" if norm[r, c] > 0.5 else "black")
        ax.set_title(arm, fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(len(total)))
        ax.set_yticks(range(len(total)))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# Documents


def _img_md(path: Path, root: Path, alt: str) -> str:
    return f"![{alt}]({Path(os.path.relpath(path, root)).as_posix()})"


def _img_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(results: dict[str, Any], report_dir: Path, recipe_yaml: str, environment: dict[str, Any]) -> dict[str, Path]:
    """Write figures, ``report.md`` and a self-contained ``report.html`` (images embedded).

    Args:
        results: the benchmark's results (arms, paired differences, generators, grids).
        report_dir: ``<run>/report``.
        recipe_yaml: the resolved recipe, shown verbatim.
        environment: the run's environment record.

    Returns:
        Paths of the written documents and figures by name.
    """
    figures_dir = report_dir / "figures"
    figures: list[tuple[str, Path]] = []
    figures.append(("QWK and accuracy per arm (bars: mean with 95% interval; dots: seeds)", arm_metric_figure(results, figures_dir / "arms.png")))
    for extractor in results.get("extractors", []):
        fig = per_grade_fid_figure(results, extractor, figures_dir / f"fid-per-grade-{extractor.replace(':', '-')}.png")
        if fig:
            figures.append((f"Per-grade FID, {extractor} features", fig))
    figures.append(("Confusion matrices on the test split (summed over seeds)", confusion_figure(results, figures_dir / "confusion.png")))
    for name, grid in results.get("grids", {}).items():
        if grid and Path(grid).is_file():
            figures.append((f"Samples: {name}", Path(grid)))

    paired_rows = []
    for arm, pairs in results.get("paired", {}).items():
        for ref, metrics in pairs.items():
            for metric in ("qwk", "accuracy", "balanced_accuracy", f"recall_grade_{results['num_classes'] - 1}"):
                d = metrics.get(metric)
                if d:
                    paired_rows.append([arm, ref.replace("vs_", "vs "), metric, _signed(d["mean"]), f"[{_signed(d['ci_low'])}, {_signed(d['ci_high'])}]"])
    paired_header = ["arm", "against", "metric", "mean paired difference", "95% CI"]

    detail_header = ["arm", "QWK", "accuracy", "macro-F1", "balanced acc."] + [f"recall g{g}" for g in range(results["num_classes"])]
    detail_rows = []
    for arm, data in results["arms"].items():
        s = data["summary"]
        detail_rows.append([arm] + [_pm(s.get(m)) for m in ("qwk", "accuracy", "macro_f1", "balanced_accuracy")] + [_pm(s.get(f"recall_grade_{g}")) for g in range(results["num_classes"])])

    notes = results.get("notes", [])
    md = [f"# odmaug benchmark: {results.get('name', '')}", ""]
    md += [f"Test split: {results.get('test_description', 'real test split')}; seeds {results.get('seeds')}; wall time {results.get('wall_time_s', 0) / 60:.1f} min.", ""]
    md += ["## Classifier per arm", "", _markdown_table(ARM_HEADER, arm_rows(results)), ""]
    md += ["### All metrics (mean ± std over seeds)", "", _markdown_table(detail_header, detail_rows), ""]
    if paired_rows:
        md += ["### Paired differences (same seeds)", "", _markdown_table(paired_header, paired_rows), ""]
    if results.get("generators"):
        md += ["## Generators", "", "Overall: real training split vs a generated subset with the same grade mix. "
               "`*`: FID on fewer images than the small-set threshold is biased upward; compare KID.", "",
               _markdown_table(GENERATOR_HEADER, generator_rows(results)), "",
               "### Per grade", "", _markdown_table(PER_GRADE_HEADER, per_grade_generator_rows(results)), ""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Figures", ""] + [f"{_img_md(p, report_dir, alt)}\n" for alt, p in figures]
    md += ["## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", "", "## Environment", "", "```", *[f"{k}: {v}" for k, v in environment.items()], "```", ""]
    md_path = report_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md))

    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}"
        "figure{margin:1.5em 0}figcaption{color:#555;font-size:90%}pre{background:#f6f6f6;padding:1em;overflow:auto}"
    )
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>odmaug benchmark {html.escape(str(results.get('name', '')))}</title><style>{style}</style></head><body>"]
    parts.append(f"<h1>odmaug benchmark: {html.escape(str(results.get('name', '')))}</h1>")
    parts.append(f"<p>{html.escape(md[2])}</p>")
    parts += ["<h2>Classifier per arm</h2>", _html_table(ARM_HEADER, arm_rows(results))]
    parts += ["<h3>All metrics (mean ± std over seeds)</h3>", _html_table(detail_header, detail_rows)]
    if paired_rows:
        parts += ["<h3>Paired differences (same seeds)</h3>", _html_table(paired_header, paired_rows)]
    if results.get("generators"):
        parts += ["<h2>Generators</h2>", _html_table(GENERATOR_HEADER, generator_rows(results)),
                  "<h3>Per grade</h3>", _html_table(PER_GRADE_HEADER, per_grade_generator_rows(results))]
    if notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{html.escape(n)}</li>" for n in notes] + ["</ul>"]
    parts += ["<h2>Figures</h2>"] + [_img_html(p, alt) for alt, p in figures]
    parts += ["<h2>Recipe</h2>", f"<pre>{html.escape(recipe_yaml)}</pre>"]
    parts += ["<h2>Environment</h2>", "<pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in environment.items())) + "</pre>"]
    parts.append("</body></html>")
    html_path = report_dir / "report.html"
    atomic_write_text(html_path, "\n".join(parts))
    return {"markdown": md_path, "html": html_path, **{alt: p for alt, p in figures}}
