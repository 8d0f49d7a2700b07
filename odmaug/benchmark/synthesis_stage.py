"""Stage 2, synthesis: per set of synthetic images the arms need, the images balancing needs, and
``metrics_per_grade`` per grade.

A set (:class:`SyntheticSet`) is a generator's images from noise (``dm``, ``odm``), or its
translations of real images of the pass's training split (``dm-translate``, ``odm-translate``:
sources drawn as ``augment --from-real`` draws them, from ``benchmark.translate.source_grades``;
one folder per candidate strength, and :mod:`odmaug.benchmark.selection` picks the strength on
the validation split). Images go to the generator's synthesis folders
(:func:`odmaug.benchmark.store.synthesis_folder`), where an interrupted synthesis resumes image
by image; an arm's table holds the requested images only (a folder may hold more).

With ``benchmark.filter`` every generated set is graded by the real arm's first-seed classifier
(:class:`odmaug.augment.filter.GradeFilter`, as ``augment --filter-with``) and keeps the images
graded near their grade; grades left short get further seeds, up to :data:`FILTER_ROUNDS` rounds
and :data:`FILTER_MAX_FACTOR` times the images they need (what is still short is left to balancing,
which reports it). ``external:`` arms bring finished images: they are graded whole and keep what
passes (no top-up). The generative metrics then measure the kept images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from odmaug.augment.from_real import FromReal, parse_source_grades, translation_sample
from odmaug.benchmark.arms import FROM_NOISE, balancing_need
from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import synthesis_folder
from odmaug.config import Recipe, merge_options
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError

FILTER_ROUNDS = 3
"""With ``benchmark.filter``: top-up rounds after the first synthesis, at most."""
FILTER_MAX_FACTOR = 4
"""With ``benchmark.filter``: a grade is asked for at most this many times the images it needs."""


@dataclass(frozen=True)
class SyntheticSet:
    """One folder of synthetic images: ``name`` (the arms' synthetic name), its generator, and the
    translation settings (None: from noise)."""

    name: str
    generator: str
    from_real: Optional[FromReal] = None

    @property
    def key(self) -> str:
        """Its key in ``plan.synthesis``: ``odm``, or ``odm-translate@0.5`` for a candidate strength."""
        return self.name if self.from_real is None else f"{self.name}@{self.from_real.strength:g}"


def synthetic_sets(plan: Plan, recipe: Recipe) -> list[SyntheticSet]:
    """The sets the plan's arms need, in arm order: one per from-noise generator arm, one per
    candidate strength of each translation arm."""
    out: list[SyntheticSet] = []
    t = recipe.benchmark.translate
    for arm in plan.arms:
        kind, name = arm.kind, arm.synthetic_name
        if kind.generator is None or any(s.name == name for s in out):
            continue
        if kind.synthesis == FROM_NOISE:
            out.append(SyntheticSet(name, kind.generator.name))
        else:
            out += [SyntheticSet(name, kind.generator.name, FromReal(s, t.source_grades)) for s in sorted(t.strengths)]
    return out


def synthesis_counts(recipe: Recipe, real_counts: np.ndarray) -> list[int]:
    """Images to synthesize per grade: what balancing needs, and at least ``metrics_per_grade``."""
    bench = recipe.benchmark
    return [max(need, bench.metrics_per_grade) for need in balancing_need(real_counts, bench)]


def _check_sources(spec: str, counts: list[int], real_counts: np.ndarray) -> None:
    """The source grades must exist in the pass's training split: said now, before any training."""
    try:
        parse_source_grades(spec, [g for g, n in enumerate(counts) if n > 0], real_counts)
    except OdmaugError as err:
        raise OdmaugError(f"benchmark.translate.source_grades: {err}") from None


def _images_there(folder, counts: list[int]) -> int:
    """Requested images already in ``folder`` (its files, not its manifest: a filtered manifest
    lists fewer images than were made)."""
    return sum(min(n, sum(1 for _ in (folder / str(g)).glob("*.png"))) for g, n in enumerate(counts))


def plan_synthesis(plan: Plan, recipe: Recipe, splits: Splits) -> None:
    """Pick each set's synthesis folder (``plan.synthesis``) and add its stage.

    Raises:
        OdmaugError: translation source grades without images in the pass's training split.
    """
    counts = synthesis_counts(recipe, splits.train.counts())
    total, s = sum(counts), recipe.sample
    filtered = "" if recipe.benchmark.filter is None else ", filtered"
    for item in synthetic_sets(plan, recipe):
        root = plan.generators[item.generator]
        synth = plan.synthesis[item.key] = synthesis_folder(root, recipe, item.from_real)
        have = _images_there(synth, counts)
        left = max(0, total - have)
        if item.from_real is None:
            how = f"{s.sampler}, {s.steps} steps"
        else:
            _check_sources(item.from_real.source_grades, counts, splits.train.counts())
            how = (f"translated from training images, strength {item.from_real.strength:g}, sources "
                   f"{item.from_real.source_grades}, {translation_sample(s).sampler} {s.steps} steps")
        name = item.name if item.from_real is None else f"{item.name} strength {item.from_real.strength:g}"
        plan.stages.append(Stage("synthesis", name, synth, "reuse" if have >= total else ("resume" if have else "new"),
                                 f"{left} of {total} images ({how}{filtered})", left,
                                 strength=None if item.from_real is None else item.from_real.strength))


def top_up(need: dict[int, int], request: dict[int, int], kept: np.ndarray) -> Optional[dict[int, int]]:
    """The next, larger request for grades the filter left short of ``need`` (None: none is short,
    or every short grade is at :data:`FILTER_MAX_FACTOR` times its need). Each short grade gets its
    shortfall divided by its acceptance rate so far (at least 1/4), within that cap."""
    more = {}
    for grade, n in need.items():
        short, cap = n - int(kept[grade]), FILTER_MAX_FACTOR * n
        if short > 0 and request[grade] < cap:
            rate = max(int(kept[grade]) / request[grade], 1 / FILTER_MAX_FACTOR)
            more[grade] = min(cap, request[grade] + math.ceil(short / rate))
    return request | more if more else None


def _requested_rows(manifest, request: dict[int, int], recipe: Recipe, name: str) -> ImageTable:
    """The manifest's images that ``request`` names (seeds 0..n-1 per grade): a folder may hold
    more (a larger earlier request, filter top-ups), which must not change an arm's pool."""
    from odmaug.data.sources import read_manifest

    c = recipe.data.num_classes
    frame = read_manifest(manifest, c)
    limit = frame["label"].map(lambda g: request.get(int(g), 0))
    channels = None if recipe.data.channels == "auto" else int(recipe.data.channels)  # auto: the PNGs' own mode
    return ImageTable(frame[frame["seed"] < limit], c, f"{name} synthetic", recipe.data.data_dir, channels=channels)


def _make_set(item: SyntheticSet, plan: Plan, recipe: Recipe, splits: Splits, counts: list[int], context,
              show_progress: bool, grade_filter) -> ImageTable:
    """Synthesize one set's images (topped up under the filter); returns the requested rows kept."""
    from odmaug.augment.synthesis import SynthesisRequest, run_synthesis

    # The benchmark's sample section, merged here once: translations need a mid-chain sampler, and
    # the benchmark always samples the EMA weights.
    s = merge_options(recipe.sample if item.from_real is None else translation_sample(recipe.sample), use_ema=True)
    # The pass's own training split: a cv fold's sources are its training part, never val or test.
    from_real = None if item.from_real is None else dataclasses.replace(item.from_real, train=splits.train)
    mode = "" if from_real is None else f", translated (strength {from_real.strength:g}, sources {from_real.source_grades})"
    say(f"synthesis {item.name}: {sum(counts)} images ({dict(enumerate(counts))}), {s.sampler} {s.steps} steps, "
        f"guidance {s.guidance_scale:g}{mode}")
    need = {g: n for g, n in enumerate(counts) if n > 0}
    request = dict(need)
    for _ in range(1 + (FILTER_ROUNDS if grade_filter is not None else 0)):
        # The benchmark's own sample section, not the generator run's: the generator folder is kept
        # across sampler changes (its key leaves the section out), so its config.yaml may name an older one.
        job = SynthesisRequest(plan.generators[item.generator], plan.synthesis[item.key], settings=s,
                               data_dir=recipe.data.data_dir, grade_filter=grade_filter, from_real=from_real,
                               counts=request)
        manifest = run_synthesis(job, context=context, show_progress=show_progress).manifest
        table = _requested_rows(manifest, request, recipe, item.name)
        bigger = top_up(need, request, table.counts()) if grade_filter is not None else None
        if bigger is None:
            break
        request = bigger
    if grade_filter is not None:
        say(f"filter {item.name}: kept {table.counts().tolist()} of {[request.get(g, 0) for g in range(len(counts))]} "
            f"images per grade (needed {counts})")
    return table


def synthesize(plan: Plan, recipe: Recipe, splits: Splits, context, show_progress: bool,
               grade_filter=None) -> tuple[dict[str, ImageTable], dict[str, Any]]:
    """Synthesize every set's images, choose each translation arm's strength on val
    (:func:`odmaug.benchmark.selection.choose_strength`), and filter with ``grade_filter``.

    Returns:
        Every arm's synthetic images by synthetic name (the generated ones and the ready
        ``external:`` ones), and per translation arm (by label) its strength record for results.json.
    """
    from odmaug.benchmark.selection import choose_strength

    counts = synthesis_counts(recipe, splits.train.counts())
    sets = synthetic_sets(plan, recipe)
    made = {item.key: _make_set(item, plan, recipe, splits, counts, context, show_progress, grade_filter)
            for item in sets}
    tables, choices = {}, {}
    for arm in plan.arms:
        mine = [item for item in sets if item.name == arm.synthetic_name]
        if not mine or arm.synthetic_name in tables:
            continue
        if mine[0].from_real is None:
            tables[arm.synthetic_name] = made[mine[0].key]
            continue
        candidates = {item.from_real.strength: made[item.key] for item in mine}
        chosen, record = choose_strength(arm, candidates, recipe, splits, plan.store, context, show_progress)
        tables[arm.synthetic_name] = candidates[chosen]
        choices[arm.label] = record | {"synthesis": {f"{i.from_real.strength:g}": str(plan.synthesis[i.key]) for i in mine},
                                       "source_grades": mine[0].from_real.source_grades}
    return tables | _filtered_externals(plan, grade_filter, context), choices


def _filtered_externals(plan: Plan, grade_filter, context) -> dict[str, ImageTable]:
    """The ``external:`` arms' images, graded by ``grade_filter`` like every generated set (as given without one)."""
    from odmaug.augment.filter import filter_table

    if grade_filter is None:
        return plan.externals
    out = {}
    for name, table in plan.externals.items():
        out[name] = filter_table(grade_filter, table, context.device)[0]
        say(f"filter {name}: kept {out[name].counts().tolist()} of {table.counts().tolist()} images per grade")
    return out
