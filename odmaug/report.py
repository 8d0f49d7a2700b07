"""The benchmark report: terminal tables, figures, ``report.md`` and a self-contained ``report.html``.

Input is the benchmark's results dictionary (see :mod:`odmaug.benchmark`); nothing here trains or
measures, so a report can be rebuilt from ``results.json`` alone. Rows come from
:mod:`odmaug.report_tables` (where degenerate spreads become "–" with their reason), figures from
:mod:`odmaug.report_figures`; this module lays them out as documents.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from odmaug.report_figures import arm_metric_figure, confusion_figure, per_grade_fid_figure
from odmaug.report_tables import (  # noqa: F401  arm_table, generator_table: re-exported for the benchmark
    ARM_HEADER,
    GENERATOR_HEADER,
    PAIRED_HEADER,
    PER_GRADE_HEADER,
    arm_rows,
    arm_table,
    detail_rows,
    generator_footnotes,
    generator_rows,
    generator_table,
    paired_rows,
    per_grade_generator_rows,
)
from odmaug.runs import atomic_write_text


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


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


def _bootstrap_note(results: dict[str, Any]) -> str:
    """What the two intervals count, with the seeds and images behind the bootstrap."""
    boot = results.get("bootstrap") or {}
    seeds_only = "“95% CI (seeds)”: t-interval over seeds, the test images held fixed."
    if "n_images" not in boot:
        return seeds_only + " " + boot.get("error", "No seeds × images bootstrap in these results.")
    return (f"{seeds_only} “seeds × images”: paired hierarchical bootstrap ({boot['resamples']} resamples of "
            f"{boot['n_seeds']} seed(s), then of the {boot['n_images']} test images, the same draws for every arm), "
            "95% percentile interval. MDE: the smallest true difference detectable with 80% power at two-sided 5% "
            "on this many seeds and images, 2.80 × the bootstrap SE; a null result reads “no gain larger than the MDE”. "
            "Identical predictions differ by exactly 0 in every resample: “0 [0, 0] (identical predictions)”. "
            f"With few seeds (here {boot['n_seeds']}) its seed part is too narrow: resampling S values spreads as "
            "(S-1)/S of their variance, with no t correction; read it beside the seeds-only interval.")


def _blocks(results: dict[str, Any]) -> list[tuple]:
    """The report's body once, for both renderings: ("h", level, text), ("p", text), ("table", header, rows), ("list", items)."""
    seeds = results.get("seeds") or []
    detail_header = ["arm", "QWK", "accuracy", "macro-F1", "balanced acc."] + [f"recall g{g}" for g in range(results["num_classes"])]
    blocks: list[tuple] = [
        ("p", f"Test split: {results.get('test_description', 'real test split')}; seeds {seeds}; "
              f"wall time {results.get('wall_time_s', 0) / 60:.1f} min."),
        ("h", 2, "Classifier per arm"), ("table", ARM_HEADER, arm_rows(results)),
        ("p", "“± – (reason)” and “[–, –] (reason)”: no spread is shown where it would measure nothing "
              "(one seed, or every seed giving the same value)."),
        ("h", 3, f"All metrics (mean ± std over {len(seeds)} seed(s))"), ("table", detail_header, detail_rows(results)),
    ]
    paired = paired_rows(results)
    if paired:
        blocks += [("h", 3, "Paired differences (same seeds)"), ("p", _bootstrap_note(results)), ("table", PAIRED_HEADER, paired)]
    if results.get("generators"):
        blocks += [("h", 2, "Generators"),
                   ("p", "Overall: real training split vs a generated subset with the same grade mix. "
                         "FID marked * rests on fewer images than the small-set threshold and is biased upward; compare KID."),
                   ("table", GENERATOR_HEADER, generator_rows(results)),
                   *[("p", line.strip()) for line in generator_footnotes(results)],
                   ("h", 3, "Per grade"), ("table", PER_GRADE_HEADER, per_grade_generator_rows(results))]
    if results.get("notes"):
        blocks += [("h", 2, "Notes"), ("list", results["notes"])]
    return blocks


def _markdown(blocks: list[tuple], title: str, figures: list[tuple[str, Path]], report_dir: Path,
              recipe_yaml: str, environment: dict[str, Any]) -> str:
    md = [f"# {title}", ""]
    for block in blocks:
        if block[0] == "h":
            md += ["#" * block[1] + " " + block[2], ""]
        elif block[0] == "p":
            md += [block[1], ""]
        elif block[0] == "table":
            md += [_markdown_table(block[1], block[2]), ""]
        else:
            md += [f"- {n}" for n in block[1]] + [""]
    md += ["## Figures", ""] + [f"{_img_md(p, report_dir, alt)}\n" for alt, p in figures]
    md += ["## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", "", "## Environment", "", "```",
           *[f"{k}: {v}" for k, v in environment.items()], "```", ""]
    return "\n".join(md)


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%}"
    "figure{margin:1.5em 0}figcaption{color:#555;font-size:90%}pre{background:#f6f6f6;padding:1em;overflow:auto}"
)


def _html(blocks: list[tuple], title: str, figures: list[tuple[str, Path]], recipe_yaml: str,
          environment: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if block[0] == "h":
            parts.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif block[0] == "table":
            parts.append(_html_table(block[1], block[2]))
        else:
            parts += ["<ul>"] + [f"<li>{html.escape(n)}</li>" for n in block[1]] + ["</ul>"]
    parts += ["<h2>Figures</h2>"] + [_img_html(p, alt) for alt, p in figures]
    parts += ["<h2>Recipe</h2>", f"<pre>{html.escape(recipe_yaml)}</pre>"]
    parts += ["<h2>Environment</h2>", "<pre>" + html.escape("\n".join(f"{k}: {v}" for k, v in environment.items())) + "</pre>"]
    return "\n".join(parts + ["</body></html>"])


def _figures(results: dict[str, Any], figures_dir: Path) -> list[tuple[str, Path]]:
    """Draw the report's figures; (caption, path) pairs, sample grids included when present."""
    figures = [("QWK and accuracy per arm (bars: mean with 95% interval where seeds differ; dots: seeds)",
                arm_metric_figure(results, figures_dir / "arms.png"))]
    for extractor in results.get("extractors", []):
        fig = per_grade_fid_figure(results, extractor, figures_dir / f"fid-per-grade-{extractor.replace(':', '-')}.png")
        if fig:
            figures.append((f"Per-grade FID, {extractor} features", fig))
    figures.append(("Confusion matrices on the test split (summed over seeds)", confusion_figure(results, figures_dir / "confusion.png")))
    for name, grid in results.get("grids", {}).items():
        if grid and Path(grid).is_file():
            figures.append((f"Samples: {name}", Path(grid)))
    return figures


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
    figures = _figures(results, report_dir / "figures")
    blocks = _blocks(results)
    title = f"odmaug benchmark: {results.get('name', '')}"
    md_path, html_path = report_dir / "report.md", report_dir / "report.html"
    atomic_write_text(md_path, _markdown(blocks, title, figures, report_dir, recipe_yaml, environment))
    atomic_write_text(html_path, _html(blocks, title, figures, recipe_yaml, environment))
    return {"markdown": md_path, "html": html_path, **{alt: p for alt, p in figures}}
