"""The benchmark's arms, by name: one registry, one entry per kind of arm.

An arm is a way to build the classifier's training table. Its entry (:class:`ArmKind`) says:

* ``table``: how the training table is built from the real training rows and the arm's synthetic
  images (:data:`REAL_ONLY`, :data:`OVERSAMPLED`, :data:`WITH_SYNTHETIC`), and how large it will
  be (for ``--dry-run`` estimates);
* ``generator``: the generator the benchmark trains for it, as a change to the recipe (DM is ODM
  with the ordinal weight at zero), or None;
* ``images``: where ready synthetic images come from instead (``external:<name>=<path>``), or None;
* ``training``: classifier options its jobs train with (``{"loss": "focal"}``), or none
  (:mod:`odmaug.benchmark.remedies`);
* ``synthesis``: how its generator makes images: :data:`FROM_NOISE` (sampling from pure noise) or
  :data:`BY_TRANSLATION` (real training images of other grades translated to the scarce grades,
  SDEdit; :mod:`odmaug.augment.from_real`, with ``benchmark.translate``'s strengths and sources).
  Arms of one generator share its training and store folder whatever their synthesis mode.

Registered kinds::

    real                          the real training images alone
    oversample                    real images of scarce grades repeated up to the target count
    dm, odm                       filled with images of the benchmark's own DM / ODM generator
    dm-translate, odm-translate   the same generators, filled with translated real training images
    external:<name>=<path>        filled with images from a folder or manifest (e.g. another generator)
    class-weighted(-effective), balanced-sampler, focal, mixup, cutmix, corn   real images, a remedy
    <arm>+<remedy>                <arm>'s table and images, trained with <remedy>'s options (odm+corn)

(``external``: :mod:`odmaug.benchmark.externals`; remedies: :mod:`odmaug.benchmark.remedies`).

A new arm is one :func:`register_arm` call. How ``benchmark.arms`` names arms (``<kind>``,
``<kind>:<argument>``, ``<arm>+<remedy>``) is read by :mod:`odmaug.benchmark.arm_specs`, which
loads every module that registers arms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from odmaug.config import BenchmarkConfig, DataConfig, Recipe
from odmaug.data import ImageTable
from odmaug.registry import Registry

TableBuild = Callable[[ImageTable, Optional[ImageTable], BenchmarkConfig, int], tuple[ImageTable, Optional[pd.DataFrame]]]
ImagesLoader = Callable[[str, DataConfig], ImageTable]  # (argument after "<kind>:", data) -> synthetic images


@dataclass(frozen=True)
class TableRule:
    """How an arm's training table is built.

    Attributes:
        build: ``build(real_train, synthetic, bench, seed)`` -> (training table, per-grade counts
            from :func:`odmaug.data.balance.balance` or None). ``real_train`` holds the real
            training rows only; validation and test stay real and are never passed.
        size: ``size(real_counts [C], bench)`` -> training images it will have (for estimates).
    """

    build: TableBuild
    size: Callable[[np.ndarray, BenchmarkConfig], int]


# The three ways to build a training table (TableBuild): from the real training rows, the arm's
# synthetic images (None for an arm without), benchmark settings and the seed.


def _real_only(real_train, synthetic, bench, seed):
    return real_train, None


def _oversample_count(bench: BenchmarkConfig) -> Optional[int]:
    """The count oversampling fills to: ``to_count`` under ``to-count``, else None (the largest grade)."""
    return bench.to_count if bench.strategy == "to-count" else None


def _oversampled(real_train, synthetic, bench, seed):
    from odmaug.data.balance import balance

    return balance(real_train, [], "oversample", _oversample_count(bench), 1.0, seed)


def _with_synthetic(real_train, synthetic, bench, seed):
    from odmaug.data.balance import balance

    return balance(real_train, [synthetic], bench.strategy, bench.to_count, bench.max_synthetic_share, seed)


def _oversampled_size(counts: np.ndarray, bench: BenchmarkConfig) -> int:
    from odmaug.data.balance import target_count

    target = target_count("oversample", counts, _oversample_count(bench))
    return int(sum(max(n, target) for n in counts.tolist()))


def balancing_need(counts: np.ndarray, bench: BenchmarkConfig) -> list[int]:
    """Synthetic images balancing adds per grade (real ``counts`` [C]): up to the target, within the share cap."""
    from odmaug.data.balance import share_cap, target_count

    target = target_count(bench.strategy, counts, bench.to_count)
    return [int(min(max(0, target - n), share_cap(n, bench.max_synthetic_share))) for n in counts.tolist()]


def _with_synthetic_size(counts: np.ndarray, bench: BenchmarkConfig) -> int:
    return int(counts.sum()) + sum(balancing_need(counts, bench))


REAL_ONLY = TableRule(_real_only, lambda counts, bench: int(counts.sum()))
OVERSAMPLED = TableRule(_oversampled, _oversampled_size)
WITH_SYNTHETIC = TableRule(_with_synthetic, _with_synthetic_size)


FROM_NOISE = "noise"
"""Synthesis mode: the generator samples its images from pure noise (``augment``)."""
BY_TRANSLATION = "translation"
"""Synthesis mode: the generator translates real training images of other grades (``augment --from-real``)."""


@dataclass(frozen=True)
class GeneratorRecipe:
    """A generator the benchmark trains: its name (the store folder's prefix) and its recipe change.

    Arms that name the same generator share its training (and its store folder).
    """

    name: str
    change: Callable[[Recipe], None]  # applied in place to a deep copy of the benchmark's recipe

    def recipe(self, recipe: Recipe) -> Recipe:
        out = recipe.model_copy(deep=True)
        out.name = self.name
        self.change(out)
        return out


def _ordinal_off(recipe: Recipe) -> None:
    recipe.diffusion.ordinal.gamma = 0.0


DM = GeneratorRecipe("dm", _ordinal_off)
ODM = GeneratorRecipe("odm", lambda recipe: None)  # the recipe's own ordinal weight


@dataclass(frozen=True)
class ArmKind:
    """One registered kind of arm (see the module docstring)."""

    name: str
    summary: str
    table: TableRule
    generator: Optional[GeneratorRecipe] = None
    images: Optional[ImagesLoader] = None
    synthesis: str = FROM_NOISE
    training: tuple[tuple[str, Any], ...] = ()  # classifier options of its jobs (remedies.arm_recipe)

    @property
    def generated_name(self) -> Optional[str]:
        """The name its generator's images go by: ``odm``, ``odm-translate``; None without a generator."""
        if self.generator is None:
            return None
        return self.generator.name + ("" if self.synthesis == FROM_NOISE else "-translate")


ARMS: Registry[ArmKind] = Registry("arm")


def register_arm(name: str, summary: str, table: TableRule, generator: Optional[GeneratorRecipe] = None,
                 images: Optional[ImagesLoader] = None, synthesis: str = FROM_NOISE,
                 training: Optional[dict[str, Any]] = None) -> ArmKind:
    """Add a kind of arm to :data:`ARMS` (see the module docstring); returns its entry.

    Raises:
        ValueError: a synthesis mode other than :data:`FROM_NOISE` and :data:`BY_TRANSLATION`.
    """
    if synthesis not in (FROM_NOISE, BY_TRANSLATION):
        raise ValueError(f"unknown synthesis mode {synthesis!r}")
    return ARMS.add(name, ArmKind(name, summary, table, generator, images, synthesis, tuple((training or {}).items())),
                    summary)


@dataclass(frozen=True)
class Arm:
    """One arm as ``benchmark.arms`` names it, e.g. ``dm``, ``external:sg=/data/sg`` or ``odm+corn``."""

    spec: str
    kind: ArmKind
    argument: Optional[str]  # the text after ``<kind>:`` (of a combination: its image arm's)
    remedy: Optional[str] = None  # ``corn`` of ``odm+corn``: the remedy whose training options it takes

    @property
    def label(self) -> str:
        """Its name in results and reports: the spec without ``=<path>`` (``external:sg``, ``external:sg+focal``)."""
        return self.spec.split("=", 1)[0] + (f"+{self.remedy}" if self.remedy and "=" in self.spec else "")

    @property
    def file_label(self) -> str:
        """:attr:`label` as part of a file name (``external-sg``)."""
        return self.label.replace(":", "-")

    @property
    def synthetic_name(self) -> Optional[str]:
        """The name its synthetic images go by (``dm``, ``sg``); None for an arm without any."""
        if self.kind.images is not None:
            return self.argument.split("=", 1)[0]
        return self.kind.generated_name


register_arm("real", "the real training images alone", REAL_ONLY)
register_arm("oversample", "real images of scarce grades repeated", OVERSAMPLED)
register_arm("dm", "filled with images of a DM generator (ordinal weight 0)", WITH_SYNTHETIC, generator=DM)
register_arm("odm", "filled with images of an ODM generator", WITH_SYNTHETIC, generator=ODM)
register_arm("dm-translate", "filled with real training images translated by the DM generator", WITH_SYNTHETIC,
             generator=DM, synthesis=BY_TRANSLATION)
register_arm("odm-translate", "filled with real training images translated by the ODM generator", WITH_SYNTHETIC,
             generator=ODM, synthesis=BY_TRANSLATION)

