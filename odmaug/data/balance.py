"""Class balancing: merge real images with synthetic ones (or repeats of real ones) per grade.

One function, :func:`balance`, builds every training arm of the benchmark:

- ``match-majority``: every grade of the training split is filled up to the largest grade's count;
- ``to-count``: every grade is filled up to ``to_count`` images;
- ``oversample``: like ``match-majority`` (or ``to-count`` when ``to_count`` is given), but the
  added rows repeat real training images drawn at random with replacement, as imbalanced-learn's
  ``RandomOverSampler`` does; they are marked ``source=oversampled``.

Whatever the strategy, real images are never dropped, the added rows all go to the training split,
and the validation and test rows are the real ones, unchanged. ``max_synthetic_share`` caps the
share of added rows (synthetic or oversampled) in each grade's training images, so the arms stay
comparable under the same cap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from odmaug.data.schemes import SCHEMES
from odmaug.data.table import ImageTable
from odmaug.errors import OdmaugError
from odmaug.registry import Registry


@dataclass(frozen=True)
class Strategy:
    """One registered balancing strategy.

    Attributes:
        target: ``target(real_counts [C], to_count)`` -> training images per grade it aims for
            (raises OdmaugError for a ``to_count`` it needs or refuses).
        repeats_real: it fills grades with repeats of their real images, not synthetic ones.
    """

    target: Callable[[np.ndarray, Optional[int]], int]
    repeats_real: bool = False


def _largest_grade(real_counts: np.ndarray, to_count: Optional[int]) -> int:
    if to_count is not None:
        raise OdmaugError("--to-count only applies to --strategy to-count or oversample")
    return int(real_counts.max())


def _given_count(real_counts: np.ndarray, to_count: Optional[int]) -> int:
    if to_count is None:
        raise OdmaugError("--strategy to-count needs --to-count M")
    return int(to_count)


def _given_or_largest(real_counts: np.ndarray, to_count: Optional[int]) -> int:
    return int(to_count) if to_count is not None else int(real_counts.max())


STRATEGIES: Registry[Strategy] = Registry("balancing strategy")
STRATEGIES.add("match-majority", Strategy(_largest_grade), "fill every grade to the largest real grade")
STRATEGIES.add("to-count", Strategy(_given_count), "fill every grade to --to-count")
STRATEGIES.add("oversample", Strategy(_given_or_largest, repeats_real=True),
               "repeat real images up to --to-count or the largest grade")
COUNT_COLUMNS = ["grade", "real", "available", "target", "added", "total", "added_share", "shortfall"]


def share_cap(real_count: int, max_share: float) -> int | float:
    """Most rows that may be added to a grade with ``real_count`` real images.

    With ``a`` added rows the share is ``a / (real + a)``; ``a / (real + a) <= s`` gives
    ``a <= s * real / (1 - s)``. ``s = 1`` means no cap.
    """
    if max_share >= 1.0:
        return math.inf
    # The epsilon keeps exact ratios (s = 0.5 -> a = real) from rounding down.
    return int(math.floor(max_share * real_count / (1.0 - max_share) + 1e-9))


def target_count(strategy: str, real_counts: np.ndarray, to_count: Optional[int]) -> int:
    """Training images per grade the strategy aims for (:data:`STRATEGIES`)."""
    chosen = STRATEGIES.get(strategy)
    if to_count is not None and to_count < 1:
        raise OdmaugError(f"--to-count must be at least 1 (got {to_count})")
    return chosen.target(real_counts, to_count)


def _synthetic_pool(real: ImageTable, synthetic: Sequence[ImageTable]) -> pd.DataFrame:
    """All candidate synthetic rows (training split, ``source=synthetic``), duplicates removed."""
    frames = []
    for table in synthetic:
        if table.num_classes != real.num_classes:
            raise OdmaugError(
                f"synthetic set '{table.name}' has {table.num_classes} grades but the real data has {real.num_classes}"
            )
        frames.append(table.frame)
    if not frames:
        return pd.DataFrame(columns=real.frame.columns)
    pool = pd.concat(frames, ignore_index=True).drop_duplicates("path").reset_index(drop=True)
    # Synthetic images only ever train: they never enter validation or test.
    pool["split"] = "train"
    pool["source"] = "synthetic"
    files = [p for p in pool["path"] if not str(p).startswith(SCHEMES)]
    missing = [p for p in files if not Path(p).is_file()]
    if missing:
        raise OdmaugError(
            f"{len(missing)} synthetic image(s) listed in a manifest are missing, e.g. {missing[0]}"
        )
    return pool


def _fill_grade(
    grade: int, train: ImageTable, pool: Optional[pd.DataFrame], n_real: int, target: int, max_share: float, seed: int
) -> tuple[Optional[pd.DataFrame], list]:
    """The rows added to one grade (None when none) and its row of the counts table.

    ``pool`` holds the synthetic candidates; None means ``oversample``: repeat the grade's real
    training rows, drawn with replacement.
    """
    need = max(0, target - n_real)
    if pool is None:
        candidates = train.frame[train.frame["label"] == grade]
        available = n_real  # drawn with replacement: any number, as long as one exists
        supply = math.inf if n_real else 0
    else:
        candidates = pool[pool["label"] == grade]
        available = supply = len(candidates)
    take = int(min(need, share_cap(n_real, max_share), supply))
    rng = np.random.default_rng([seed, grade])
    picked = None
    if take and pool is None:
        picked = candidates.iloc[rng.integers(0, n_real, size=take)].copy()
        picked["source"] = "oversampled"
    elif take:
        order = np.sort(rng.permutation(len(candidates))[:take])  # keep the manifest's order
        picked = candidates.iloc[order]
    total = n_real + take
    return picked, [grade, n_real, available, target, take, total, take / total if total else 0.0, need - take]


def balance(
    real: ImageTable,
    synthetic: Sequence[ImageTable] = (),
    strategy: str = "match-majority",
    to_count: Optional[int] = None,
    max_synthetic_share: float = 1.0,
    seed: int = 0,
) -> tuple[ImageTable, pd.DataFrame]:
    """Merge real and synthetic images (or real repeats) into one class-balanced table.

    Args:
        real: the real dataset, every split (only its training split is balanced).
        synthetic: synthetic tables (e.g. manifests written by ``odmaug augment``); ignored rows
            are simply not used. Must be empty for ``oversample``.
        strategy: ``match-majority``, ``to-count`` or ``oversample``.
        to_count: training images per grade for ``to-count`` (and optionally ``oversample``).
        max_synthetic_share: largest share of added rows among a grade's training images, in (0, 1].
        seed: seed of which synthetic images are picked when more are available than needed, and
            of which real images ``oversample`` repeats. Each grade draws from its own stream, so
            changing one grade's target leaves the other grades' picks unchanged.

    Returns:
        The merged table (real rows first, unchanged and in order; then added training rows) and a
        per-grade DataFrame with the columns ``COUNT_COLUMNS`` (``real`` = before, ``total`` = after,
        ``shortfall`` = images the strategy wanted but could not get).

    Raises:
        OdmaugError: unknown strategy, missing ``to_count``, a share outside (0, 1], a synthetic set
            with another grade count, synthetic sets given to ``oversample``, missing synthetic files,
            or no real training images.
    """
    if not 0.0 < max_synthetic_share <= 1.0:
        raise OdmaugError(f"--max-synthetic-share must be in (0, 1] (got {max_synthetic_share})")
    train = real.split("train")
    if len(train) == 0:
        raise OdmaugError(f"{real.name}: no training images to balance")
    real_counts = train.counts()  # [C]
    target = target_count(strategy, real_counts, to_count)
    oversample = STRATEGIES.get(strategy).repeats_real
    if oversample and len(synthetic):
        raise OdmaugError("--strategy oversample repeats real images: do not pass synthetic sets")
    pool = _synthetic_pool(real, synthetic) if not oversample else None

    added, rows = [], []
    for grade in range(real.num_classes):
        picked, row = _fill_grade(grade, train, pool, int(real_counts[grade]), target, max_synthetic_share, seed)
        added += [picked] if picked is not None else []
        rows.append(row)

    frame = pd.concat([real.frame, *added], ignore_index=True) if added else real.frame.copy()
    merged = ImageTable(frame, real.num_classes, f"{real.name}+{strategy}", real.data_dir, **real.format_fields())
    counts = pd.DataFrame(rows, columns=COUNT_COLUMNS)
    return merged, counts


def shortfall_messages(counts: pd.DataFrame, strategy: str, max_synthetic_share: float = 1.0) -> list[str]:
    """One line per grade that could not reach its target, saying why."""
    out = []
    kind = "real images to repeat" if strategy == "oversample" else "synthetic images"
    for row in counts.itertuples(index=False):
        if row.shortfall <= 0:
            continue
        capped = share_cap(row.real, max_synthetic_share)
        if row.added >= capped and capped < row.target - row.real:
            why = f"the synthetic-share cap {max_synthetic_share:g} allows {capped}"
        elif strategy == "oversample":
            why = "the grade has no real training image"
        else:
            why = f"only {row.available} {kind} available"
        out.append(
            f"grade {row.grade}: {row.total} of {row.target} images ({row.shortfall} short: {why})"
        )
    return out
