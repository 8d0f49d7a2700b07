"""Stage 2, synthesis: per generator, the images balancing needs, and ``metrics_per_grade`` per grade.

Images go to the generator's synthesis folder (:func:`odmaug.benchmark.store.synthesis_folder`),
where an interrupted synthesis resumes image by image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odmaug.benchmark.stage import Plan, Splits, Stage, say
from odmaug.benchmark.store import synthesis_folder
from odmaug.config import Recipe
from odmaug.data import ImageTable


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


def plan_synthesis(plan: Plan, recipe: Recipe, counts: list[int]) -> None:
    """Pick each generator's synthesis folder (``plan.synthesis``) and add its stage."""
    total = sum(counts)
    for name, root in plan.generators.items():
        synth = plan.synthesis[name] = synthesis_folder(root, recipe)
        have = len(pd.read_csv(synth / "manifest.csv")) if (synth / "manifest.csv").is_file() else 0
        left = max(0, total - have)
        plan.stages.append(
            Stage("synthesis", name, synth, "reuse" if have >= total else ("resume" if have else "new"),
                  f"{left} of {total} images ({recipe.sample.sampler}, {recipe.sample.steps} steps)", left)
        )


def synthesize(plan: Plan, recipe: Recipe, splits: Splits, device: str, show_progress: bool) -> dict[str, ImageTable]:
    """Synthesize every generator's images; returns every arm's synthetic images by name
    (the generators' and the ready ``external:`` ones)."""
    from odmaug.augment.synthesis import run_synthesis
    from odmaug.data.sources import read_manifest

    counts = synthesis_counts(recipe, splits.train.counts())
    s, c = recipe.sample, recipe.data.num_classes
    tables = {}
    for name, root in plan.generators.items():
        say(f"synthesis {name}: {sum(counts)} images ({dict(enumerate(counts))}), {s.sampler} {s.steps} steps, "
            f"guidance {s.guidance_scale:g}")
        # The benchmark's own sample section, not the generator run's: the generator folder is kept
        # across sampler changes (its key leaves the section out), so its config.yaml may name an older one.
        manifest = run_synthesis(run=root, out_dir=plan.synthesis[name], counts={g: n for g, n in enumerate(counts) if n > 0},
                                 settings=s, use_ema=True, device=device, data_dir=recipe.data.data_dir,
                                 show_progress=show_progress).manifest
        tables[name] = ImageTable(read_manifest(manifest, c), c, f"{name} synthetic", recipe.data.data_dir)
    return tables | plan.externals
