"""What every benchmark stage shares: the real splits it works on, the plan and its stages, the stage log line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from odmaug.benchmark.arms import Arm
from odmaug.console import console, is_main_process
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError


@dataclass(frozen=True)
class Splits:
    """The real images one pass of the stages works on, passed to every stage (never reloaded).

    ``train`` is what arms fill and classifiers train on; ``val`` chooses each classifier's epoch;
    ``test`` is what the report measures. Each holds the rows of its split only; ``name`` names
    the whole set (the training table goes by it too, as arms and classifiers record it). ``fold``
    is the cross-validation fold these splits are (None: the holdout protocol's one pass).
    """

    name: str
    train: ImageTable
    val: ImageTable
    test: ImageTable
    fold: Optional[int] = None

    @property
    def prefix(self) -> str:
        """``fold2-`` for fold 2, empty for the holdout pass: what a fold's file and stage names start with."""
        return "" if self.fold is None else f"fold{self.fold}-"

    @classmethod
    def of(cls, table: ImageTable, fold: Optional[int] = None) -> "Splits":
        """The three splits of ``table``.

        Raises:
            OdmaugError: no validation or no test rows (the benchmark needs real ones).
        """
        parts = {name: table.split(name) for name in ("train", "val", "test")}
        for name in ("val", "test"):
            if len(parts[name]) == 0:
                raise OdmaugError(f"{table.name} has no {name} split: the benchmark needs real validation and test images")
        parts["train"].name = table.name
        return cls(table.name, **parts, fold=fold)


@dataclass
class Stage:
    """One planned unit of work, for ``--dry-run`` and for the log."""

    kind: str
    name: str
    path: Path
    status: str  # new / resume / reuse / planned
    work: str
    left: int = 0  # units of work left: generator steps, images, classifier epochs (0 for metrics)
    seconds: Optional[float] = None  # estimated time (odmaug.benchmark.estimate); None: not estimated
    fold: Optional[int] = None  # the cross-validation fold it belongs to (None: holdout)
    arm: Optional[str] = None  # classifier stages: the label of the arm it trains
    strength: Optional[float] = None  # translation stages: the SDEdit strength t0 / T (None: from noise)


@dataclass
class Plan:
    """What a benchmark will do, computed without training anything."""

    arms: list[Arm]
    store: Path
    externals: dict[str, ImageTable]  # synthetic name -> its ready images (loaded and checked)
    generators: dict[str, Path] = field(default_factory=dict)  # generator name -> its run folder
    synthesis: dict[str, Path] = field(default_factory=dict)  # image set (odm, odm-translate@0.5) -> its folder
    stages: list[Stage] = field(default_factory=list)
    note: str = ""  # how the times were estimated (empty: no estimate)

    def records(self) -> list[dict[str, Any]]:
        return [vars(s) | {"path": str(s.path)} for s in self.stages]

    def generator_arms(self) -> dict[str, Arm]:
        """The arms that train a generator, by generator name (the first arm naming it)."""
        out: dict[str, Arm] = {}
        for arm in self.arms:
            if arm.kind.generator is not None:
                out.setdefault(arm.kind.generator.name, arm)
        return out


def say(message: str) -> None:
    """One line per stage event: from rank 0 only, or torchrun's K processes would print it K times."""
    if is_main_process():
        console.print(f"[bold cyan]»[/] {message}", highlight=False)
