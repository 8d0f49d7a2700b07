"""The benchmark report as documents: ``report.md`` and a self-contained ``report.html``.

Input is the benchmark's results dictionary (see :mod:`odmaug.benchmark.results`); nothing here
trains or measures, so a report can be rebuilt from ``results.json`` alone. The body comes from
:mod:`odmaug.benchmark.report.blocks` (rows from :mod:`odmaug.benchmark.report.tables`, where
degenerate spreads become "–" with their reason), figures from
:mod:`odmaug.benchmark.report.figures`; this module lays them out.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

from odmaug.atomic import atomic_write_text
from odmaug.benchmark.report.blocks import report_blocks
from odmaug.benchmark.report.figures import arm_confusion_figure, arm_metric_figure, per_grade_fid_figure


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _img_md(path: Path, root: Path, alt: str) -> str:
    return f"![{alt}]({Path(os.path.relpath(path, root)).as_posix()})"


def _img_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    figures.append(("Confusion matrices on the test split (summed over seeds)", arm_confusion_figure(results, figures_dir / "confusion.png")))
    for name, grid in results.get("grids", {}).items():
        if grid and Path(grid).is_file():
            figures.append((f"Samples: {name}", Path(grid)))
    return figures


def write_benchmark_report(results: dict[str, Any], report_dir: Path, recipe_yaml: str, environment: dict[str, Any]) -> dict[str, Path]:
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
    blocks = report_blocks(results)
    title = f"odmaug benchmark: {results.get('name', '')}"
    md_path, html_path = report_dir / "report.md", report_dir / "report.html"
    atomic_write_text(md_path, _markdown(blocks, title, figures, report_dir, recipe_yaml, environment))
    atomic_write_text(html_path, _html(blocks, title, figures, recipe_yaml, environment))
    return {"markdown": md_path, "html": html_path, **{alt: p for alt, p in figures}}
