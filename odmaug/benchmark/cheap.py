"""The best cheap remedy, and every generator arm against it (issue 28): the comparison a reviewer
asks for first, at the top of the report and in results.json (``cheap_remedy``).

The non-generative arms (``real``, ``oversample`` and the remedies: every arm without synthetic
images) compete on validation QWK: the mean, over seeds (and folds), of each classifier's QWK on
the validation split at its selected epoch (``metrics.json``'s ``val``). The test split never
chooses. Every generator arm (an arm with synthetic images, combinations such as ``odm+corn``
included) is then compared with the chosen arm on test: the paired difference (generator arm -
remedy) of QWK and of top-grade recall, with the seeds x test-images interval and MDE of
:func:`odmaug.metrics.bootstrap.paired_bootstrap` (the remedy is one of its ``refs``, so the
difference uses the same image resamples as every other figure of the run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from odmaug.benchmark.arms import Arm

SELECTED_BY = "mean validation QWK over seeds (and folds), never test"


def record_val_qwk(record: dict[str, Any]) -> Optional[float]:
    """One classifier job's validation QWK: its record's ``val``, else its folder's ``metrics.json``
    (None: neither is readable)."""
    val = record.get("val")
    if val is None:
        try:
            val = json.loads((Path(record["dir"]) / "metrics.json").read_text()).get("val")
        except (OSError, KeyError, TypeError, ValueError):
            return None
    return None if not val or val.get("qwk") is None else float(val["qwk"])


def validation_qwk(arms: Iterable[Arm], passes: list[dict[str, dict[Any, dict[str, Any]]]]) -> dict[str, Optional[float]]:
    """Mean validation QWK of every non-generative arm (by label) over the seeds of every pass
    (``passes``: one classifier results dict per pass, arm -> seed -> record); None where a
    classifier's figure is missing."""
    out: dict[str, Optional[float]] = {}
    for arm in (a for a in arms if a.synthetic_name is None):
        values = [record_val_qwk(r) for results in passes for r in results.get(arm.label, {}).values()]
        out[arm.label] = float(np.mean(values)) if values and None not in values else None
    return out


def best_cheap_arm(val: dict[str, Optional[float]]) -> Optional[str]:
    """The arm with the highest validation QWK (ties: the first listed); None when none has one."""
    scored = [(q, -i, arm) for i, (arm, q) in enumerate(val.items()) if q is not None]
    return max(scored)[2] if scored else None


def cheap_remedy_record(arms: Iterable[Arm], val: dict[str, Optional[float]], best: Optional[str],
                        bootstrap: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """results.json's ``cheap_remedy``: ``{"arm", "selected_by", "val_qwk": {arm: mean},
    "vs_generators": {generator arm: {"qwk": summary, "recall_grade_<C-1>": summary}}}`` (summaries
    of :func:`~odmaug.metrics.bootstrap.paired_bootstrap`, generator arm - ``arm``, on test); with
    ``"why"`` instead of comparisons when there is no remedy or no generator arm to compare."""
    generators = [a.label for a in arms if a.synthetic_name is not None]
    out: dict[str, Any] = {"arm": best, "selected_by": SELECTED_BY, "val_qwk": val, "vs_generators": {}}
    if best is None or not generators:
        out["why"] = ("no non-generative arm with a validation QWK" if best is None else "no generator arm")
        return out
    top = f"recall_grade_{num_classes - 1}"
    paired = bootstrap.get("paired", {})
    for label in generators:
        diffs = paired.get(label, {}).get(f"vs_{best}", {})
        out["vs_generators"][label] = {"qwk": diffs.get("qwk"), top: diffs.get(top)}
    if "error" in bootstrap:
        out["why"] = bootstrap["error"]
    return out
