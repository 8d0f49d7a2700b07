"""The benchmark's planning step: every input checked and every stage decided before any work.

:func:`make_plan` runs first, for ``--dry-run`` and for a real run alike, and writes nothing. It
fails (one :class:`~odmaug.errors.OdmaugError` line) on anything that would otherwise stop the
benchmark later, after generators have trained for hours: a classifier or generator that cannot
run at the image size, or an ``external:<name>=<path>`` arm whose folder or manifest is missing,
unreadable or empty. The caller has loaded the recipe's data already (that is the first check).

Where stages live (content-addressed under ``<runs_dir>/store/``):

* ``generator-<arm>-<key>``: the key hashes every generator input except ``train.steps``, which
  says where training stops, not what a step does: a checkpoint holds the whole training state,
  so ``N`` steps then a resume to ``M`` gives the weights of ``M`` steps, bit for bit
  (:mod:`odmaug.diffusion.train_state`). A larger ``train.steps`` therefore continues a stored
  shorter run. A stored run already past ``train.steps`` is never cut back: its weights are not
  those of the shorter run, and the checkpoint at that step is usually gone
  (``train.keep_checkpoints``). A shorter request then trains from zero in a branch folder
  ``generator-<arm>-<key>-b2`` (``-b3``... when that one is past it too).
* ``<generator folder>/synthetic-step<N>-<hash>``: images of the generator at step ``N`` with one
  set of sampling settings, so a continued generator or changed sampler never meets the images
  of another (synthesis would refuse that folder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from odmaug.config import DataConfig, Recipe
from odmaug.data import ImageTable, table_from_spec
from odmaug.errors import OdmaugError

GENERATOR_ARMS = {"dm": 0.0, "odm": None}  # arm -> forced gamma (None: the recipe's)


def content_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object (sorted keys): the identity of a stage's inputs."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def generator_recipe(recipe: Recipe, arm: str) -> Recipe:
    """The recipe a generator arm trains with: DM is ODM with the ordinal weight at zero."""
    out = recipe.model_copy(deep=True)
    out.name = arm
    gamma = GENERATOR_ARMS[arm]
    if gamma is not None:
        out.diffusion.ordinal.gamma = gamma
    return out


def generator_key(recipe: Recipe) -> str:
    """Identity of a generator's training, without ``train.steps`` (see the module docstring)."""
    parts = {k: recipe.to_dict()[k] for k in ("data", "generator", "diffusion", "train", "seed")}
    parts["data"].pop("data_dir", None)  # where the file lies does not change the images
    parts["train"].pop("steps", None)
    return content_hash(parts)


def generator_status(root: Path, steps: int) -> tuple[str, int]:
    """``new`` / ``resume`` / ``reuse`` for a generator folder asked for ``steps``, and its stored step."""
    from odmaug.diffusion.checkpoint import read_pointer

    try:
        step = int(read_pointer(root / "generator").get("step", 0))
    except (OdmaugError, OSError, ValueError):
        return "new", 0
    return ("reuse" if step >= steps else "resume"), step


def generator_folder(store: Path, arm: str, recipe: Recipe) -> Path:
    """The folder generator ``arm`` of ``recipe`` trains in: of the folders of its setting, the one
    furthest along without being past ``train.steps``; a new branch when all are past it."""
    base = f"generator-{arm}-{generator_key(recipe)}"
    branches = sorted((p for p in store.glob(f"{base}-b*") if p.name[len(base) + 2:].isdigit()),
                      key=lambda p: int(p.name[len(base) + 2:]))
    best: Optional[tuple[Path, int]] = None
    for folder in [store / base, *branches]:
        if folder.is_dir():
            step = generator_status(folder, recipe.train.steps)[1]
            if step <= recipe.train.steps and (best is None or step > best[1]):
                best = (folder, step)
    if best is not None:
        return best[0]
    if not (store / base).exists():
        return store / base
    n = 2
    while (store / f"{base}-b{n}").exists():
        n += 1
    return store / f"{base}-b{n}"


def synthesis_folder(generator_root: Path, recipe: Recipe) -> Path:
    """Where the benchmark's images of a generator at ``train.steps`` with ``recipe.sample`` go."""
    from odmaug.augment.synthesis import SamplingSettings

    settings = asdict(SamplingSettings.from_config(recipe.sample))
    return generator_root / f"synthetic-step{recipe.train.steps}-{content_hash(settings, 8)}"


def synthesis_counts(recipe: Recipe, real_counts: np.ndarray) -> list[int]:
    """Images to synthesize per grade: what balancing needs, and at least ``metrics_per_grade``."""
    from odmaug.data.balance import share_cap, target_count

    bench = recipe.benchmark
    target = target_count(bench.strategy, real_counts, bench.to_count)
    out = []
    for n_real in real_counts.tolist():
        need = min(max(0, target - n_real), share_cap(n_real, bench.max_synthetic_share))
        out.append(int(max(need, bench.metrics_per_grade)))
    return out


def external_arm(arm: str) -> tuple[str, str]:
    """``external:<name>=<path>`` -> (name, path)."""
    name, path = arm[len("external:"):].split("=", 1)
    return name, path


def load_externals(arms: list[str], data: DataConfig) -> dict[str, ImageTable]:
    """The training images of every ``external:`` arm, by name, as synthetic rows.

    Raises:
        OdmaugError: a name that is taken (``dm``, ``odm``, another external arm), or a folder or
            manifest that is missing, unreadable, has no images or does not fit ``data.num_classes``.
    """
    tables: dict[str, ImageTable] = {}
    for arm in (a for a in arms if a.startswith("external:")):
        name, path = external_arm(arm)
        if name in GENERATOR_ARMS or name in tables:
            raise OdmaugError(f"benchmark arm {arm}: the name '{name}' is taken (by the {name} generator "
                              "or another external arm); give it another name")
        try:
            table = table_from_spec(path, data).split("train")
        except OdmaugError as err:
            raise OdmaugError(f"benchmark arm {arm}: {err}") from None
        except OSError as err:  # e.g. a folder without read permission
            raise OdmaugError(f"benchmark arm {arm}: cannot read {path} ({err.strerror or err})") from None
        if len(table) == 0:
            raise OdmaugError(f"benchmark arm {arm}: {path} has no training images")
        table.frame["source"] = "synthetic"
        table.name = f"{name} (external)"
        tables[name] = table
    return tables


@dataclass
class Stage:
    """One planned unit of work, for ``--dry-run`` and for the log."""

    kind: str
    name: str
    path: Path
    status: str  # new / resume / reuse / planned
    work: str
    left: int = 0  # units of work left: generator steps, images, classifier epochs (0 for metrics)
    seconds: Optional[float] = None  # estimated time (odmaug.benchmark_estimate); None: not estimated


@dataclass
class Plan:
    """What a benchmark will do, computed without training anything."""

    arms: list[str]
    generators: dict[str, Path]  # arm -> generator run folder (dm/odm)
    externals: dict[str, ImageTable]  # name -> its training images (loaded and checked)
    store: Path
    synthesis: dict[str, Path] = field(default_factory=dict)  # arm -> synthesis folder
    stages: list[Stage] = field(default_factory=list)
    note: str = ""  # how the times were estimated (empty: no estimate)

    def records(self) -> list[dict[str, Any]]:
        return [vars(s) | {"path": str(s.path)} for s in self.stages]


def _generator_stages(plan: Plan, recipe: Recipe, arm: str, counts: list[int]) -> None:
    g_recipe = generator_recipe(recipe, arm)
    steps = recipe.train.steps
    root = plan.generators[arm] = generator_folder(plan.store, arm, g_recipe)
    status, step = generator_status(root, steps)
    since = f" from step {step}" if status == "resume" else ""
    left = max(0, steps - step)
    plan.stages.append(Stage("generator", arm, root, status, f"{left} of {steps} steps{since}", left))
    synth = plan.synthesis[arm] = synthesis_folder(root, recipe)
    have = len(pd.read_csv(synth / "manifest.csv")) if (synth / "manifest.csv").is_file() else 0
    total = sum(counts)
    left = max(0, total - have)
    plan.stages.append(
        Stage("synthesis", arm, synth, "reuse" if have >= total else ("resume" if have else "new"),
              f"{left} of {total} images ({recipe.sample.sampler}, {recipe.sample.steps} steps)", left)
    )


def make_plan(recipe: Recipe, store: Path, real: ImageTable) -> Plan:
    """Check every input and decide every stage and whether it is new, resumed or reused.

    Raises:
        OdmaugError: the classifier or (with DM/ODM arms) the generator cannot run at the recipe's
            image size, another generator setting cannot train, or an external arm's images
            cannot be used; checked before anything is written.
    """
    from odmaug.classify.models import check_classifier
    from odmaug.diffusion.trainer import check_training_recipe

    arms = list(recipe.benchmark.arms)
    gen_arms = [a for a in arms if a in GENERATOR_ARMS]
    check_classifier(recipe.classifier.model, recipe.data.num_classes, recipe.classifier.image_size or recipe.data.image_size)
    if gen_arms:  # the arms differ only in the ordinal weight, which does not change the network
        check_training_recipe(recipe)
    plan = Plan(arms, {}, load_externals(arms, recipe.data), store)
    counts = synthesis_counts(recipe, real.split("train").counts())
    for arm in gen_arms:
        _generator_stages(plan, recipe, arm, counts)
    n_epochs = recipe.classifier.epochs
    for arm in dict.fromkeys(["real", *arms]):
        for seed in recipe.benchmark.seeds if arm in arms else recipe.benchmark.seeds[:1]:
            plan.stages.append(Stage("classifier", f"{arm.split('=')[0]} seed {seed}", store, "planned",
                                     f"{n_epochs} epochs", n_epochs))
    for arm in [*gen_arms, *plan.externals]:
        plan.stages.append(Stage("metrics", arm, store, "planned", ", ".join(recipe.benchmark.extractors) + " features"))
    return plan


def format_duration(seconds: float) -> str:
    """``~40 s``, ``~12 min``, ``~2.5 h``: an estimate's precision, no more."""
    if seconds < 1:
        return "<1 s"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_table(plan: Plan):
    """The plan as a rich table; with estimates, a ``time`` column and a total row."""
    from rich.table import Table

    timed = any(s.seconds is not None for s in plan.stages)
    table = Table(title=f"benchmark plan (store: {plan.store})", title_justify="left")
    for col in ("stage", "what", "status", "work", *(["time"] if timed else []), "where"):
        table.add_column(col)
    for s in plan.stages:
        time_cell = [format_duration(s.seconds) if s.seconds is not None else "-"] if timed else []
        table.add_row(s.kind, s.name, s.status, s.work, *time_cell, s.path.name)
    if timed:
        total = sum(s.seconds or 0.0 for s in plan.stages)
        table.add_section()
        table.add_row("total", "", "", "", format_duration(total), "")
    return table
