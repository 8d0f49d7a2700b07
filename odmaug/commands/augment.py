"""``odmaug augment`` and ``odmaug balance`` as library calls: the command's options merged onto
the recipe by the one rule (:func:`odmaug.config.merge_options`: None keeps the recipe's value),
then the work; the CLI only parses and prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from odmaug.augment.synthesis import SynthesisRequest, SynthesisSummary, run_synthesis
from odmaug.config import Recipe, merge_options
from odmaug.errors import OdmaugError


def run_synthesis_with_options(run: str | Path, *, out: Optional[Path] = None, target_classes: Optional[str] = None,
                               n: Optional[int] = None, to_count: Optional[int] = None,
                               seed_start: Optional[int] = None, force: bool = False, device: Optional[str] = None,
                               data_dir: Optional[Path] = None, filter_with: Optional[Path] = None,
                               max_grade_error: Optional[int] = None, from_real: bool = False,
                               source_grades: Optional[str] = None, strength: Optional[float] = None,
                               sample: Optional[Mapping[str, Any]] = None) -> SynthesisSummary:
    """:func:`~odmaug.augment.synthesis.run_synthesis` with the options merged onto the run's recipe,
    once, here: ``device`` at the top, ``sample`` (``{field: value}``) into its ``sample`` section
    (:func:`odmaug.diffusion.sampling.sample_settings`) and ``target_classes``, ``seed_start``,
    ``filter_with``, ``max_grade_error`` and ``strength`` into ``augment``.

    The amounts are one choice: ``n`` or ``to_count`` when either is given, else the recipe's pair.
    With ``from_real`` and no sampler given, a recipe's multistep solver gives way to ddim (a
    translation starts mid-chain, which only single-step samplers can); its strength is
    ``augment.strength`` (``--strength`` when given).

    Raises:
        OdmaugError: a value a section refuses (one line naming the option), ``--strength`` or
            ``--source-grades`` without ``from_real``, ``--max-grade-error`` without a classifier,
            and whatever :func:`run_synthesis` refuses.
    """
    from odmaug.augment.filter import GradeFilter
    from odmaug.augment.from_real import translation_sample
    from odmaug.diffusion.sampling import sample_settings
    from odmaug.runs import open_run

    if not from_real and (strength is not None or source_grades is not None):
        raise OdmaugError("--strength and --source-grades need --from-real")
    recipe = merge_options(open_run(run).recipe(), device=device)
    base = translation_sample(recipe.sample) if from_real and (sample or {}).get("sampler") is None else recipe.sample
    settings = sample_settings(base, **(sample or {}))  # the rule shared with the benchmark's translate arms
    aug = merge_options(recipe.augment, target_classes=target_classes, seed_start=seed_start,
                        filter_with=filter_with, max_grade_error=max_grade_error, strength=strength)
    if n is None and to_count is None:
        n, to_count = aug.n, aug.to_count
    if aug.filter_with is None and max_grade_error is not None:
        raise OdmaugError("--max-grade-error needs --filter-with CLASSIFIER")
    grade_filter = None if aug.filter_with is None else GradeFilter(aug.filter_with, aug.max_grade_error)
    request = SynthesisRequest(run, out, aug.target_classes, n, to_count, aug.seed_start, settings, force=force,
                               data_dir=None if data_dir is None else str(data_dir), grade_filter=grade_filter,
                               from_real=_from_real(from_real, aug.strength, source_grades))
    return run_synthesis(request, device=recipe.device)


def _from_real(on: bool, strength: float, source_grades: Optional[str]):
    """The ``--from-real`` settings (None without it): the recipe's (merged) strength and the source grades."""
    from odmaug.augment.from_real import FromReal

    return FromReal(strength, "auto" if source_grades is None else source_grades) if on else None


def write_grid(manifest: Path, path: Path, per_grade: int = 8) -> Path:
    """A grid of the first ``per_grade`` images (lowest seeds) of every grade in a synthesis folder's manifest."""
    import numpy as np
    import pandas as pd

    from odmaug.data.decode import decode_image_file
    from odmaug.figures import grade_grid

    frame = pd.read_csv(manifest)
    record = json.loads((manifest.parent / "synthesis.json").read_text())
    ident = record["identity"]
    title = (f"{record['generator_run']} step {record['step']}: {ident['sampler']} {ident['steps']} steps, "
             f"guidance {ident['guidance_scale']:g}")
    rows, labels = [], []
    for grade, part in frame.sort_values(["label", "seed"]).groupby("label"):
        images = [decode_image_file(manifest.parent / p) for p in part["path"][:per_grade]]  # gray stays gray
        rows.append(np.stack(images))
        labels.append(f"grade {grade}")
    return grade_grid(rows, path, row_labels=labels, title=title)


@dataclass(frozen=True)
class Balanced:
    """What :func:`balance_with_options` wrote: the merged table, its per-grade counts
    (``odmaug.data.balance.COUNT_COLUMNS``), the settings used and a line per grade left short."""

    table: Any
    counts: Any
    real_name: str
    strategy: str
    share: float
    shortfalls: list[str]


def balance_with_options(cfg: Recipe, out: Path, synthetic: Sequence[str] = (), strategy: Optional[str] = None,
                         to_count: Optional[int] = None, max_share: Optional[float] = None) -> Balanced:
    """Merge ``cfg``'s real data with ``synthetic`` sets (or real repeats) into one balanced manifest ``out``.

    Each option left None is the recipe's ``augment`` value (checked by
    :func:`odmaug.data.balance.balance`, which names the option); the recipe's ``to_count`` applies
    only where the strategy uses a count (not ``match-majority``).
    """
    from odmaug.data import load_table, table_from_spec, write_manifest
    from odmaug.data.balance import balance, shortfall_messages

    aug = cfg.augment
    strategy = aug.strategy if strategy is None else strategy
    if to_count is None and strategy != "match-majority":
        to_count = aug.to_count
    share = aug.max_synthetic_share if max_share is None else max_share
    real = load_table(cfg.data)
    pools = [table_from_spec(spec, cfg.data) for spec in synthetic]
    merged, counts = balance(real, pools, strategy, to_count, share, cfg.seed)
    write_manifest(merged, out)
    return Balanced(merged, counts, real.name, strategy, share, shortfall_messages(counts, strategy, share))
