"""Rich tables of generative metrics: one row per grade, figures with the images behind them."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from odmaug.metrics.spread import KID_ADVICE, KID_ONE_SUBSET, OMITTED_MARK, footnotes
from odmaug.metrics.tail import TAIL_MARK, TAIL_NOTE

SMALL_MARK = "*"


def fid_marks(row: dict[str, Any]) -> str:
    """The marks after a metrics row's FID: ``*`` on a small set (biased upward), ``‡`` resting on
    a few real images (:mod:`odmaug.metrics.tail`)."""
    return (SMALL_MARK if row.get("fid_small_set") else "") + (TAIL_MARK if row.get("fid_tail_dominated") else "")


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


KID_SCALE = 1e3
KID_HEADER = "KID ×10³"
"""KID is printed times 10³, the field's convention (StyleGAN2-ADA, ...), with the scale in the header."""


KID_PLAIN_LIMIT = 1e5
"""From here up (× 10³) KID is printed as a power of ten: ``457380347`` could not be read at a glance."""
KID_SCALE_NOTE = ("KID ×10³ has 3 significant digits; from 100,000 up it is written as a power of ten "
                  "(4.57×10⁸ is KID 457,000). Domain-feature KID has no fixed scale: compare rows of one "
                  "features column, never with Inception KID.")
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def kid_text(value: float, digits: int = 3) -> str:
    """``value`` × 10³ with ``digits`` significant digits: plain notation (no ``e-05``, no ``e+04``)
    below :data:`KID_PLAIN_LIMIT`, above it ``4.57×10⁸``.

    Significant digits, not decimals: Inception KID is ~1e-3 and domain-feature KID ranges from
    ~1e-5 to ~1e6, so fixed decimals would print 0.0000 for some and 26501.7189 for others, and a
    nine-digit integer carries six digits of noise.
    """
    scaled = value * KID_SCALE
    if scaled == 0 or not math.isfinite(scaled):
        return f"{scaled:g}"
    exponent = math.floor(math.log10(abs(scaled)))
    if abs(scaled) >= KID_PLAIN_LIMIT:
        mantissa = round(scaled / 10 ** exponent, digits - 1)
        if abs(mantissa) >= 10:  # 9.995e8 rounds up to 10.0e8: write 1.00e9
            mantissa, exponent = mantissa / 10, exponent + 1
        return f"{mantissa:.{digits - 1}f}×10{str(exponent).translate(_SUPERSCRIPT)}"
    decimals = max(0, digits - 1 - exponent)
    return f"{scaled:.{decimals}f}"


def kid_cell(row: dict[str, Any]) -> str:
    """``mean ± std`` (× 10³) of one row, or ``mean †`` when the std was omitted (the footnote says why)."""
    if row.get("kid_std") is None:
        return f"{kid_text(row['kid_mean'])} {OMITTED_MARK}"
    return f"{kid_text(row['kid_mean'])} ± {kid_text(row['kid_std'], 2)}"


def kid_footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """Footnote lines for rows whose KID ± was omitted (grouped by reason), plus the remedy."""
    marked = [(str(r["grade"]), r.get("kid_std_omitted")) for r in rows if not r.get("too_few")]
    lines = footnotes(marked, "KID")
    if any(reason and reason != KID_ONE_SUBSET for _, reason in marked):
        lines.append(f"  ({KID_ADVICE}.)")
    return lines


def generative_table(result: dict[str, Any]) -> Table:
    """Grade | n real | n gen | FID | KID ×10³ | precision | recall for one extractor's result.

    FID on fewer than ``small_set`` images carries ``*`` (biased: compare KID), FID resting on a few
    real images ``‡`` (:mod:`odmaug.metrics.tail`); KID without a
    meaningful spread carries ``†`` and a footnote with the reason; grades with too few images read
    "too few". The extractor is named in the title and the caption.
    """
    settings = result.get("settings", {})
    rows = [result["overall"], *result["per_grade"]]
    caption = [f"{SMALL_MARK} FID on fewer than {settings.get('small_set', '?')} images is biased: compare KID. "
               f"Features: {result['extractor']} ({result['feature_dim']}-d). "
               f"{KID_HEADER}: mean ± std over {settings.get('kid_subsets', '?')} subsets of "
               f"min({settings.get('kid_subset_size', '?')}, n real, n gen) images; "
               f"precision/recall k={settings.get('nearest_k', '?')}.", *kid_footnotes(rows),
               *([TAIL_NOTE] if any(r.get("fid_tail_dominated") for r in rows) else [])]
    table = Table(
        title=f"{result['extractor']}: {result['generated']['name']} vs {result['real']['name']} "
              f"({result['image_size']}px)",
        title_justify="left",
        caption="\n".join(caption),
        caption_justify="left",
    )
    for column in ("grade", "n real", "n gen", "FID", KID_HEADER, "precision", "recall"):
        table.add_column(column, justify="left" if column == "grade" else "right")
    for row in rows:
        counts = [str(row["grade"]), str(row["n_real"]), str(row["n_generated"])]
        if row["too_few"]:
            table.add_row(*counts, "too few", "too few", "-", "-", style="dim")
            continue
        fid = _number(row["fid"]) + fid_marks(row)
        table.add_row(*counts, fid, kid_cell(row), _number(row["precision"], 3), _number(row["recall"], 3),
                      end_section=row["grade"] == "all")
    return table
