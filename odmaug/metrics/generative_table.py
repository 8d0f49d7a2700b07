"""Rich tables of generative metrics: one row per grade, figures with the images behind them."""

from __future__ import annotations

from typing import Any

from rich.table import Table

SMALL_MARK = "*"


def _number(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def generative_table(result: dict[str, Any]) -> Table:
    """Grade | n real | n gen | FID | KID | precision | recall for one extractor's result.

    FID on fewer than ``small_set`` images carries ``*`` (biased: compare KID); grades with too few
    images read "too few". The extractor is named in the title and the caption.
    """
    settings = result.get("settings", {})
    table = Table(
        title=f"{result['extractor']}: {result['generated']['name']} vs {result['real']['name']} "
              f"({result['image_size']}px)",
        title_justify="left",
        caption=f"{SMALL_MARK} FID on fewer than {settings.get('small_set', '?')} images is biased: compare KID. "
                f"Features: {result['extractor']} ({result['feature_dim']}-d). "
                f"KID: mean +- std over {settings.get('kid_subsets', '?')} subsets; "
                f"precision/recall k={settings.get('nearest_k', '?')}.",
        caption_justify="left",
    )
    for column in ("grade", "n real", "n gen", "FID", "KID", "precision", "recall"):
        table.add_column(column, justify="left" if column == "grade" else "right")
    for row in [result["overall"], *result["per_grade"]]:
        counts = [str(row["grade"]), str(row["n_real"]), str(row["n_generated"])]
        if row["too_few"]:
            table.add_row(*counts, "too few", "too few", "-", "-", style="dim")
            continue
        fid = _number(row["fid"]) + (SMALL_MARK if row["fid_small_set"] else "")
        kid = f"{row['kid_mean']:.3g} +- {row['kid_std']:.2g}"  # significant digits: Inception KID ~1e-3
        table.add_row(*counts, fid, kid, _number(row["precision"], 3), _number(row["recall"], 3),
                      end_section=row["grade"] == "all")
    return table
