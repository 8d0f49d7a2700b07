"""Every name a recipe chooses, checked against its registry before any work.

The recipe sections (:mod:`odmaug.config`) sit below the packages whose registries they name, so
they check types only; this is where a recipe meets every registry (:mod:`odmaug.registry`).
"""

from __future__ import annotations

from odmaug.config import Recipe
from odmaug.errors import OdmaugError


def check_names(recipe: Recipe) -> Recipe:
    """``recipe``, once every sampler, data source, generator network, objective, balancing
    strategy, feature extractor and arm it names is registered.

    Raises:
        OdmaugError: one line naming the setting, the unknown name and the known ones (also a
            path-based data source without ``data.path``).
    """
    from odmaug.benchmark.arm_specs import check_arm_spec
    from odmaug.data.balance import STRATEGIES
    from odmaug.data.sources import DATA_SOURCES
    from odmaug.diffusion.parameterization import OBJECTIVES
    from odmaug.diffusion.samplers import SAMPLERS
    from odmaug.diffusion.unet import GENERATORS
    from odmaug.metrics.features import parse_spec

    for where, registry, name in [("sample.sampler", SAMPLERS, recipe.sample.sampler),
                                  ("data.source", DATA_SOURCES, recipe.data.source),
                                  ("generator.name", GENERATORS, recipe.generator.name),
                                  ("diffusion.prediction", OBJECTIVES, recipe.diffusion.prediction),
                                  ("augment.strategy", STRATEGIES, recipe.augment.strategy)]:
        if name not in registry:
            raise OdmaugError(f"{where}: {registry.unknown(name)}")
    if DATA_SOURCES.get(recipe.data.source).needs_path and not recipe.data.path:
        raise OdmaugError(f"data.path is required when data.source is '{recipe.data.source}'")
    for spec in [*recipe.metrics.extractors, *recipe.benchmark.extractors]:
        parse_spec(spec)
    for spec in recipe.benchmark.arms:
        try:
            check_arm_spec(spec)
        except ValueError as err:
            raise OdmaugError(f"benchmark.arms: {err}") from None
    return recipe
