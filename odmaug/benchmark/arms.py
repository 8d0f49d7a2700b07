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
    class-weighted(-effective), balanced-sampler, focal, mixup, cutmix   real images, remedy (remedies)

A new arm is one :func:`register_arm` call; ``benchmark.arms`` names arms as
``<kind>`` or ``<kind>:<argument>`` (:func:`parse_arm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from odmaug.config import BenchmarkConfig, DataConfig, Recipe
from odmaug.data import ImageTable, table_from_spec
from odmaug.errors import OdmaugError

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


ARMS: dict[str, ArmKind] = {}


def register_arm(name: str, summary: str, table: TableRule, generator: Optional[GeneratorRecipe] = None,
                 images: Optional[ImagesLoader] = None, synthesis: str = FROM_NOISE,
                 training: Optional[dict[str, Any]] = None) -> ArmKind:
    """Add a kind of arm to :data:`ARMS` (see the module docstring); returns its entry.

    Raises:
        ValueError: a synthesis mode other than :data:`FROM_NOISE` and :data:`BY_TRANSLATION`.
    """
    if synthesis not in (FROM_NOISE, BY_TRANSLATION):
        raise ValueError(f"unknown synthesis mode {synthesis!r}")
    ARMS[name] = ArmKind(name, summary, table, generator, images, synthesis, tuple((training or {}).items()))
    return ARMS[name]


@dataclass(frozen=True)
class Arm:
    """One arm as ``benchmark.arms`` names it, e.g. ``dm`` or ``external:sg=/data/sg``."""

    spec: str
    kind: ArmKind
    argument: Optional[str]  # the text after ``<kind>:``

    @property
    def label(self) -> str:
        """Its name in results and reports: the spec without ``=<path>`` (``external:sg``)."""
        return self.spec.split("=", 1)[0]

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


def parse_arm(spec: str) -> Arm:
    """``dm`` -> the DM arm; ``external:sg=/data/sg`` -> the external kind with argument ``sg=/data/sg``.

    Raises:
        OdmaugError: a kind that is not registered.
    """
    name, sep, argument = spec.partition(":")
    if name not in ARMS:
        known = ", ".join(f"{k.name} ({k.summary})" for k in ARMS.values())
        raise OdmaugError(f"unknown benchmark arm '{spec}'; known: {known}")
    return Arm(spec, ARMS[name], argument if sep else None)


def check_arm_spec(spec: str) -> None:
    """Check how ``benchmark.arms`` names an arm, at recipe load (nothing is read).

    Raises:
        ValueError: a kind that is not registered, or an argument its kind does not take
            (``external`` needs ``<name>=<path>``; the others take none).
    """
    name, sep, argument = spec.partition(":")
    kind = ARMS.get(name)
    if kind is None:
        well_formed = False
    elif kind.images is None:
        well_formed = not sep
    else:
        label, equals, path = argument.partition("=")
        well_formed = bool(label and equals and path)
    if not well_formed:
        usage = ", ".join(k.name if k.images is None else f"{k.name}:<name>=<path>" for k in ARMS.values())
        raise ValueError(f"unknown arm '{spec}' (use {usage})")


def generator_recipe(recipe: Recipe, arm: str) -> Recipe:
    """The recipe the generator of arm ``arm`` (``dm``, ``odm``) trains with."""
    generator = parse_arm(arm).kind.generator
    if generator is None:
        raise OdmaugError(f"benchmark arm {arm} trains no generator")
    return generator.recipe(recipe)


def _external_images(argument: str, data: DataConfig) -> ImageTable:
    """``<name>=<path>`` -> the training images at ``path``, marked synthetic.

    Raises:
        OdmaugError: a folder or manifest that is missing, unreadable, has no images or does not
            fit ``data.num_classes``.
    """
    name, path = argument.split("=", 1)
    try:
        table = table_from_spec(path, data).split("train")
    except OSError as err:  # e.g. a folder without read permission
        raise OdmaugError(f"cannot read {path} ({err.strerror or err})") from None
    if len(table) == 0:
        raise OdmaugError(f"{path} has no training images")
    table.frame["source"] = "synthetic"
    table.name = f"{name} (external)"
    return table


register_arm("real", "the real training images alone", REAL_ONLY)
register_arm("oversample", "real images of scarce grades repeated", OVERSAMPLED)
register_arm("dm", "filled with images of a DM generator (ordinal weight 0)", WITH_SYNTHETIC, generator=DM)
register_arm("odm", "filled with images of an ODM generator", WITH_SYNTHETIC, generator=ODM)
register_arm("external", "filled with images of a folder or manifest: external:<name>=<path>", WITH_SYNTHETIC,
             images=_external_images)
register_arm("dm-translate", "filled with real training images translated by the DM generator", WITH_SYNTHETIC,
             generator=DM, synthesis=BY_TRANSLATION)
register_arm("odm-translate", "filled with real training images translated by the ODM generator", WITH_SYNTHETIC,
             generator=ODM, synthesis=BY_TRANSLATION)


def load_externals(arms: list[Arm], data: DataConfig) -> dict[str, ImageTable]:
    """The ready synthetic images of every arm that brings its own (``external:``), by name.

    Raises:
        OdmaugError: a name that is taken (by a generator or another such arm), or images that
            cannot be used (see :func:`_external_images`); the message names the arm.
    """
    generators = {k.generated_name for k in ARMS.values() if k.generator is not None}
    tables: dict[str, ImageTable] = {}
    for arm in (a for a in arms if a.kind.images is not None):
        name = arm.synthetic_name
        if name in generators or name in tables:
            raise OdmaugError(f"benchmark arm {arm.spec}: the name '{name}' is taken (by the {name} generator "
                              "or another external arm); give it another name")
        try:
            tables[name] = arm.kind.images(arm.argument, data)
        except OdmaugError as err:
            raise OdmaugError(f"benchmark arm {arm.spec}: {err}") from None
    return tables


import odmaug.benchmark.remedies  # noqa: E402,F401  (registers the rare-grade remedy arms)
