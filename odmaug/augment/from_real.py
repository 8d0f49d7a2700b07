"""``augment --from-real``: which real training image each synthetic image starts from (SDEdit).

Sources come from a TRAINING split only (validation and test images must never leak into training
data through a translated copy): the generator run's, or the one the caller passes
(:attr:`FromReal.train`, e.g. a benchmark pass's training part). The image of (grade g, seed s) starts from
row ``pool[g][k]`` with ``k`` drawn by ``numpy.random.default_rng([s, SOURCE_STREAM])``: fixed by the
seed, independent of batches and ranks, and recorded in the manifest (``source_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from odmaug.augment.plan import Item
from odmaug.config import check_strength
from odmaug.data import ImageTable, load_table, to_model_range
from odmaug.data.images import prepared
from odmaug.diffusion.schedule import NoiseSchedule
from odmaug.diffusion.samplers import mid_chain_names, mid_chain_sampler
from odmaug.diffusion.translate import effective_strength
from odmaug.digest import json_digest
from odmaug.errors import OdmaugError

SOURCE_STREAM = 0x5DED17
"""Second word of the source-pick seed, so the pick is not correlated with the image's noise (seed s)."""


def parse_source_grades(spec: str, targets: Sequence[int], counts: np.ndarray) -> dict[int, list[int]]:
    """Per target grade, the source grades: ``auto`` = the neighbouring grades (g - 1, g + 1) that have
    training images; ``"2,3"`` = those grades for every target (each must have training images).

    Raises:
        OdmaugError: a grade that is not a number, outside 0..C-1, or without training images.
    """
    num_classes = len(counts)
    if spec.strip().lower() == "auto":
        out = {}
        for g in targets:
            near = [n for n in (g - 1, g + 1) if 0 <= n < num_classes and counts[n] > 0]
            if not near:
                raise OdmaugError(f"--source-grades auto: no training images in the grades next to {g}")
            out[g] = near
        return out
    grades = []
    for part in (p.strip() for p in spec.split(",")):
        try:
            grades.append(int(part))
        except ValueError:
            raise OdmaugError(f"--source-grades: '{part}' is not a grade (use e.g. 3, 2,3 or auto)") from None
    for g in grades:
        if not 0 <= g < num_classes:
            raise OdmaugError(f"--source-grades {g} is outside the grades 0..{num_classes - 1}")
        if counts[g] == 0:
            raise OdmaugError(f"--source-grades {g}: the run's training split has no images of grade {g}")
    return {g: sorted(set(grades)) for g in targets}


@dataclass(frozen=True)
class FromReal:
    """``--from-real`` settings: SDEdit strength (t0 / T), the source grades (``auto`` or ``"2,3"``)
    and, optionally, the training images to draw from.

    ``strength``: from a recipe (``augment.strength``, or one of ``benchmark.translate.strengths``),
    checked again here by the same rule (:func:`odmaug.config.check_strength`: in (0, 1]).
    ``train``: the real training rows to translate (its ``train`` split rows are used; any other
    row is dropped), e.g. a cross-validation fold's training part. None: the ``train`` split of the
    generator run's recipe's data, loaded afresh.

    Raises:
        OdmaugError: a strength outside (0, 1].
    """

    strength: float
    source_grades: str = "auto"
    train: Optional[ImageTable] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            check_strength(self.strength)
        except ValueError as err:
            raise OdmaugError(f"strength {err} (got {self.strength:g})") from None


def translation_sample(settings):
    """``settings`` (a ``sample`` section) with a sampler translation can run: a multistep solver
    gives way to ddim (a translation starts mid-chain, which only single-step samplers can)."""
    if mid_chain_sampler(settings.sampler):
        return settings
    return settings.model_copy(update={"sampler": "ddim"})


@dataclass
class SourcePools:
    """The training images each target grade translates from, and how they are read."""

    table: ImageTable
    """The run's training split (rows 0..N-1)."""
    pools: dict[int, np.ndarray]
    """Target grade -> sorted row numbers of ``table`` [n_g] (int64)."""
    strength: float
    size: int
    crop_box: Optional[tuple[int, int, int, int]] = None
    effective_strength: Optional[float] = None
    """(the chain's first timestep + 1) / T: nominal strengths between two sampler timesteps round
    down to one chain (:func:`odmaug.diffusion.translate.effective_strength`)."""

    def row(self, item: Item) -> int:
        """The row of ``table`` that image ``item`` starts from (a seeded draw)."""
        pool = self.pools[item.grade]
        return int(pool[np.random.default_rng([item.seed, SOURCE_STREAM]).integers(len(pool))])

    def source_path(self, item: Item) -> str:
        return str(self.table.frame.at[self.row(item), "path"])

    def images(self, items: Sequence[Item]) -> torch.Tensor:
        """The prepared sources of ``items``: float32 [B, C, size, size] in [-1, 1]."""
        pixels = np.stack([prepared(self.table, self.row(i), self.size, self.crop_box) for i in items])
        return to_model_range(torch.from_numpy(pixels).permute(0, 3, 1, 2))

    def identity(self) -> dict[str, Any]:
        """What the sources add to ``synthesis.json``'s identity: a changed pool means other images."""
        paths = [f"{g}:{self.table.frame.at[int(r), 'path']}" for g in sorted(self.pools) for r in self.pools[g]]
        return {
            "from_real": True, "strength": self.strength,
            "source_grades": {str(g): sorted({int(self.table.labels[r]) for r in p}) for g, p in self.pools.items()},
            "source_digest": json_digest(paths, 16),
        }

    def manifest_columns(self, items: Iterable[Item]) -> dict[str, dict[Item, Any]]:
        """``source_path``, ``strength`` and ``effective_strength`` per item, for
        ``SynthesisFolder.manifest_frame(extra=...)``."""
        items = list(items)
        return {"source_path": {i: self.source_path(i) for i in items}, "strength": {i: self.strength for i in items},
                "effective_strength": {i: self.effective_strength for i in items}}


def source_pools(recipe, data_dir: Optional[str], targets: Sequence[int], from_real: FromReal, settings,
                 size: int) -> SourcePools:
    """The pools of the training split (``from_real.train``, else the run's) for ``targets`` (see
    :func:`parse_source_grades`).

    Raises:
        OdmaugError: a sampler that cannot start mid-chain, bad source grades.
    """
    if not mid_chain_sampler(settings.sampler):
        raise OdmaugError(f"--from-real needs --sampler {mid_chain_names()} (got {settings.sampler!r})")
    strength, spec = from_real.strength, from_real.source_grades
    cfg = recipe.data if data_dir is None else recipe.data.model_copy(update={"data_dir": str(data_dir)})
    given = from_real.train
    train = (load_table(cfg) if given is None else given).split("train")  # rows renumbered 0..N-1
    grades = parse_source_grades(spec, targets, train.counts())
    labels = train.labels
    pools = {g: np.flatnonzero(np.isin(labels, src)).astype(np.int64) for g, src in grades.items()}
    effective = effective_strength(NoiseSchedule.from_config(recipe.diffusion), float(strength), settings.steps,
                                   settings.timestep_spacing)
    return SourcePools(train, pools, float(strength), size, getattr(cfg, "crop_box", None), effective)
