"""When a printed spread (± std, 95% interval) measures uncertainty, and what is printed when not.

A std or interval beside a figure reads as that figure's uncertainty. Computed from a sample that
cannot vary it is zero or rounding noise, e.g. KID "± 1.8e-07" when every KID subset is the whole
set, and reads as a precision the figure does not have. Such spreads are omitted: None in JSON, "–"
in tables, with the reason kept beside them (``kid_std_omitted`` / ``spread_omitted``) and printed.

Degenerate cases handled here:

- KID (torch-fidelity 0.4.0, ``metric_kid.kid_features_to_metric``): each of the ``subsets`` draws
  takes ``rng.choice(n, s, replace=False)`` from each set. With ``s >= n`` (odmaug lowers ``s`` to
  the smaller set's size) that draw is always the whole set, reordered; the unbiased MMD^2 is
  invariant to order, so with both sets whole every estimate is the same up to float32 rounding.
  With one set whole, the std shows the other set's subsampling only, from subsets that overlap
  heavily, and understates the uncertainty. One subset has no spread at all.
- A mean over seeds (:func:`odmaug.metrics.classification.summarize_runs`): one seed, or every seed
  giving the same value (a zero-width t-interval is no interval).

A bootstrap over images was not chosen for KID: MMD^2 is a degenerate U-statistic when the
generated distribution matches the real one (KID near 0, where good generators sit), and the naive
bootstrap is inconsistent there (Arcones & Gine 1992), so its std would be trusted least where it
matters most.
"""

from __future__ import annotations

from typing import Iterable, Optional

OMITTED_MARK = "†"
"""Marks a figure whose ± was omitted; a footnote under the table gives the reason."""

KID_WHOLE_SETS = "subset size ≥ set size, every subset is the whole set"
KID_WHOLE_REAL = ("subset size ≥ real set size, every real subset is the whole real set "
                  "(the std would show the generated set's subsampling only)")
KID_WHOLE_GENERATED = ("subset size ≥ generated set size, every generated subset is the whole generated set "
                       "(the std would show the real set's subsampling only)")
KID_ONE_SUBSET = "1 subset, no spread"
KID_ADVICE = "lower metrics.kid_subset_size below both set sizes for a spread"


def kid_spread_omitted(n_real: int, n_generated: int, subset_size: int, subsets: int) -> Optional[str]:
    """Why KID's std over subsets is no measure of uncertainty; None when it is one.

    Args:
        n_real, n_generated: images in each set (feature rows).
        subset_size: images per subset as used (after lowering to the smaller set's size).
        subsets: number of subset draws.

    Returns:
        One of the ``KID_*`` reasons (size-free, so rows with the same reason share a footnote), or
        None when both sets' subsets vary and there are at least two of them.
    """
    if subsets < 2:
        return KID_ONE_SUBSET
    whole_real, whole_generated = subset_size >= n_real, subset_size >= n_generated
    if whole_real and whole_generated:
        return KID_WHOLE_SETS
    if whole_real:
        return KID_WHOLE_REAL
    if whole_generated:
        return KID_WHOLE_GENERATED
    return None


def runs_spread_omitted(values: list[float], unit: str = "seed") -> Optional[str]:
    """Why the std/interval over ``values`` (one per ``unit``) is no measure of uncertainty; None if it is.

    Equality allows float noise of 1e-12 relative (a paired difference of equal runs is exactly 0,
    but a mean of equal floats need not be bit-identical).
    """
    if not values:
        return f"no {unit} has this figure"
    if len(values) == 1:
        return f"1 {unit}"
    scale = max(1.0, max(abs(v) for v in values))
    if max(values) - min(values) <= 1e-12 * scale:
        return f"both {unit}s equal" if len(values) == 2 else f"all {len(values)} {unit}s equal"
    return None


def footnotes(marked: Iterable[tuple[str, Optional[str]]], what: str) -> list[str]:
    """One footnote line per distinct reason: ``† <what> ± omitted for <labels>: <reason>.``

    Args:
        marked: (row label, reason or None) pairs, in table order; None rows are skipped.
        what: the figure's name (``KID``).
    """
    groups: dict[str, list[str]] = {}
    for label, reason in marked:
        if reason:
            groups.setdefault(reason, []).append(label)
    return [f"{OMITTED_MARK} {what} ± omitted for {', '.join(labels)}: {reason}." for reason, labels in groups.items()]
