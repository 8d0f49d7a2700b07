"""What to synthesize: which grades, how many images each, and the (grade, seed) pairs.

One image per (grade, seed), as in EDM's ``generate.py --seeds``: grade ``g`` gets the seeds
``seed_start, seed_start + 1, ...``, so a larger request extends a smaller one and every image can
be reproduced on its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Container, Iterable, Iterator, Optional, Sequence

import numpy as np

from odmaug.errors import OdmaugError


def parse_target_classes(spec: str | int | Sequence[int], num_classes: int) -> Optional[list[int]]:
    """``auto`` -> None; ``4``, ``"3,4"`` or ``[3, 4]`` -> sorted unique grades, checked against 0..C-1."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            return None
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise OdmaugError("--target-class needs a grade, a list like 3,4, or auto")
        grades = []
        for part in parts:
            try:
                grades.append(int(part))
            except ValueError:
                raise OdmaugError(f"--target-class: '{part}' is not a grade (use e.g. 4, 3,4 or auto)") from None
    elif isinstance(spec, (int, np.integer)):
        grades = [int(spec)]
    else:
        grades = [int(g) for g in spec]
        if not grades:
            raise OdmaugError("--target-class needs at least one grade")
    bad = [g for g in grades if not 0 <= g < num_classes]
    if bad:
        raise OdmaugError(f"--target-class {bad[0]} is outside the grades 0..{num_classes - 1}")
    return sorted(set(grades))


def needs_real_counts(grades: Optional[list[int]], n_per_grade: Optional[int]) -> bool:
    """Whether the plan depends on the real training counts (``auto`` or fill-up-to-a-count)."""
    return grades is None or n_per_grade is None


def check_amounts(n_per_grade: Optional[int], to_count: Optional[int]) -> None:
    """``--n`` and ``--to-count`` are exclusive and positive."""
    if n_per_grade is not None and to_count is not None:
        raise OdmaugError("give --n (images per grade) or --to-count (fill each grade up to M), not both")
    if n_per_grade is not None and n_per_grade <= 0:
        raise OdmaugError(f"--n must be a positive number of images (got {n_per_grade})")
    if to_count is not None and to_count <= 0:
        raise OdmaugError(f"--to-count must be a positive number of images (got {to_count})")


def images_per_grade(
    grades: Optional[list[int]],
    num_classes: int,
    n_per_grade: Optional[int] = None,
    to_count: Optional[int] = None,
    real_counts: Optional[np.ndarray] = None,
) -> dict[int, int]:
    """Images to synthesize per chosen grade.

    Args:
        grades: chosen grades, or None for ``auto`` (every grade below the target count).
        num_classes: C.
        n_per_grade: a fixed number of images per chosen grade.
        to_count: fill each chosen grade up to this many images, real training images included.
            With neither ``n_per_grade`` nor ``to_count`` the target is the largest real grade count.
        real_counts: real training images per grade [C]; needed for ``auto`` and fill-up plans.

    Returns:
        ``{grade: count}`` for every chosen grade (a count may be 0 when a grade is already full).
    """
    check_amounts(n_per_grade, to_count)
    if needs_real_counts(grades, n_per_grade):
        if real_counts is None or len(real_counts) != num_classes:
            raise OdmaugError("the real training counts per grade are needed for auto or --to-count")
        target = int(to_count) if to_count is not None else int(np.max(real_counts))
    if grades is None:
        grades = [g for g in range(num_classes) if real_counts[g] < target]
    if n_per_grade is not None:
        return {g: int(n_per_grade) for g in grades}
    return {g: max(0, target - int(real_counts[g])) for g in grades}


@dataclass(frozen=True)
class Amounts:
    """How many images of which grades: ``target_classes`` with ``n_per_grade`` or ``to_count`` (see
    :func:`images_per_grade`), or ``counts`` ``{grade: images}`` given whole (then none of the others)."""

    target_classes: str | int | Sequence[int] = "auto"
    n_per_grade: Optional[int] = None
    to_count: Optional[int] = None
    counts: Optional[dict[int, int]] = None

    def check(self) -> None:
        """One-line errors for amounts that need no model: exclusive or non-positive ones."""
        check_amounts(self.n_per_grade, self.to_count)
        if self.counts is None:
            return
        if self.n_per_grade is not None or self.to_count is not None or self.target_classes != "auto":
            raise OdmaugError("give counts per grade, or grades with --n or --to-count, not both")
        bad = {g: n for g, n in self.counts.items() if int(n) != n or n < 0}
        if bad:
            raise OdmaugError(f"counts per grade must be whole numbers of 0 or more (got {bad})")

    def needs_real_counts(self, num_classes: int) -> bool:
        """Whether the plan depends on the real training counts (``auto`` or fill-up-to-a-count)."""
        if self.counts is not None:
            return False
        return needs_real_counts(parse_target_classes(self.target_classes, num_classes), self.n_per_grade)

    def per_grade(self, num_classes: int, real_counts: Optional[np.ndarray] = None) -> dict[int, int]:
        """``{grade: images}`` for every chosen grade; grades are checked against 0..C-1."""
        if self.counts is not None:
            if self.counts:
                parse_target_classes(sorted(self.counts), num_classes)  # grades in range
            return {int(g): int(n) for g, n in sorted(self.counts.items())}
        grades = parse_target_classes(self.target_classes, num_classes)
        return images_per_grade(grades, num_classes, self.n_per_grade, self.to_count, real_counts)


@dataclass(frozen=True, order=True)
class Item:
    """One image to synthesize: written to ``<out>/<grade>/<seed>.png``."""

    grade: int
    seed: int

    @property
    def relpath(self) -> str:
        return f"{self.grade}/{self.seed}.png"


@dataclass(frozen=True)
class Request:
    """The (grade, seed) pairs of a plan, never listed: ``--n 1000000000`` costs no memory.

    Grade ``g`` asks for the seeds ``seed_start .. seed_start + counts[g] - 1``; everything about
    the request (its size, membership, what is missing) is computed from these numbers, so only
    what is on disk or generated is ever held in memory, never the whole request.
    """

    counts: dict[int, int]
    seed_start: int = 0

    def __post_init__(self) -> None:
        if self.seed_start < 0:
            raise OdmaugError(f"--seed-start must be 0 or more (got {self.seed_start})")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __contains__(self, item: Item) -> bool:
        return 0 <= item.seed - self.seed_start < self.counts.get(item.grade, 0)

    def items(self) -> Iterator[Item]:
        """Every pair, lazily, sorted by grade then seed."""
        for g in sorted(self.counts):
            for s in range(self.seed_start, self.seed_start + self.counts[g]):
                yield Item(g, s)

    def missing(self, present: Container[Item]) -> Iterator[Item]:
        """The pairs not in ``present``, lazily, in the order of :meth:`items`."""
        return (item for item in self.items() if item not in present)

    def per_grade(self, items: Iterable[Item]) -> dict[int, int]:
        """How many of ``items`` (members or not) fall in each requested grade's seeds."""
        out = dict.fromkeys(self.counts, 0)
        for item in items:
            if item in self:
                out[item.grade] += 1
        return out


def requested_items(counts: dict[int, int], seed_start: int = 0) -> list[Item]:
    """Every (grade, seed) pair of a plan as a list, sorted by grade then seed (small plans only:
    synthesis itself walks :meth:`Request.items` lazily)."""
    return list(Request(counts, seed_start).items())


def shard(items: Sequence[Item], rank: int, world_size: int) -> list[Item]:
    """The items rank ``rank`` of ``world_size`` generates: every world-th one, starting at ``rank``."""
    return list(items[rank::world_size])


def iter_shard(items: Iterable[Item], rank: int, world_size: int) -> Iterator[Item]:
    """:func:`shard` of an iterable, lazily."""
    return itertools.islice(items, rank, None, world_size)


def shard_size(n: int, rank: int, world_size: int) -> int:
    """How many of ``n`` items :func:`shard` gives rank ``rank``."""
    return len(range(rank, n, world_size))
