"""Rich tables of generative metrics: one row per grade, figures with the images behind them."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from odmaug.metrics.spread import KID_ADVICE, KID_ONE_SUBSET, OMITTED_MARK, footnotes

SMALL_MARK = "*"


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def kid_cell(row: dict[str, Any]) -> str:
    """``mean ± std`` of one row, or ``mean †`` when the std was omitted (the footnote says why).

    Significant digits, not decimals: Inception KID is ~1e-3 and domain-feature KID far smaller.
    """
    if row.get("kid_std") is None:
        return f"{row['kid_mean']:.3g} {OMITTED_MARK}"
    return f"{row['kid_mean']:.3g} ± {row['kid_std']:.2g}"


def kid_footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """Footnote lines for rows whose KID ± was omitted (grouped by reason), plus the remedy."""
    marked = [(str(r["grade"]), r.get("kid_std_omitted")) for r in rows if not r.get("too_few")]
    lines = footnotes(marked, "KID")
    if any(reason and reason != KID_ONE_SUBSET for _, reason in marked):
        lines.append(f"  ({KID_ADVICE}.)")
    return lines


def generative_table(result: dict[str, Any]) -> Table:
    """Grade | n real | n gen | FID | KID | precision | recall for one extractor's result.

    FID on fewer than ``small_set`` images carries ``*`` (biased: compare KID); KID without a
    meaningful spread carries ``†`` and a footnote with the reason; grades with too few images read
    "too few". The extractor is named in the title and the caption.
    """
    settings = result.get("settings", {})
    rows = [result["overall"], *result["per_grade"]]
    caption = [f"{SMALL_MARK} FID on fewer than {settings.get('small_set', '?')} images is biased: compare KID. "
               f"Features: {result['extractor']} ({result['feature_dim']}-d). "
               f"KID: mean ± std over {settings.get('kid_subsets', '?')} subsets of "
               f"min({settings.get('kid_subset_size', '?')}, n real, n gen) images; "
               f"precision/recall k={settings.get('nearest_k', '?')}.", *kid_footnotes(rows)]
    table = Table(
        title=f"{result['extractor']}: {result['generated']['name']} vs {result['real']['name']} "
              f"({result['image_size']}px)",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    for column in ("grade", "n real", "n gen", "FID", "KID", "precision", "recall"):
        table.add_column(column, justify="left" if column == "grade" else "right")
    for row in rows:
        counts = [str(row["grade"]), str(row["n_real"]), str(row["n_generated"])]
        if row["too_few"]:
            table.add_row(*counts, "too few", "too few", "-", "-", style="dim")
            continue
        fid = _number(row["fid"]) + (SMALL_MARK if row["fid_small_set"] else "")
        table.add_row(*counts, fid, kid_cell(row), _number(row["precision"], 3), _number(row["recall"], 3),
                      end_section=row["grade"] == "all")
    return table
