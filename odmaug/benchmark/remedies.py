"""The cheap remedies for rare grades as benchmark arms (issue 28): the real training table,
trained with one change to the classifier's settings, on the same seeds, splits and every other
classifier setting as the other arms.

Registered kinds (each is :func:`~odmaug.benchmark.arms.register_arm` with ``training``)::

    class-weighted     cross-entropy weighted by inverse grade frequency of the training table
                       (classifier.class_weights: inverse)
    class-weighted-effective   the same with Cui et al. 2019's effective-number weights, beta
                       classifier.class_weights_beta (0.999)
    balanced-sampler   batches drawn grade-balanced from the real images, the epoch as long as
                       real's (classifier.balanced_sampling: true)
    focal              softmax focal loss, Lin et al. 2017 (classifier.loss: focal, focal_gamma 2)
    mixup              mixup of each batch, Zhang et al. 2018 (classifier.mixup_alpha: 0.2, timm)
    cutmix             CutMix of each batch, Yun et al. 2019 (classifier.cutmix_alpha: 1.0, timm)
    corn               the ordinal CORN head, Shi, Cao & Raschka 2023 (classifier.head: corn;
                       odmaug.classify.corn)

An arm's ``training`` options replace those of the recipe's ``classifier`` section for its jobs
only (:func:`arm_recipe`), so they enter its classifiers' store keys and no two arms share a
stored classifier. A remedy's own options (say ``classifier.focal_gamma``) are taken from the
recipe where the remedy does not fix them.

Combinations (parsed by :mod:`odmaug.benchmark.arm_specs`): ``<arm>+<remedy>`` (e.g. ``odm+corn``, ``odm+balanced-sampler``,
``external:sg=/data/sg+focal``) is the arm ``<arm>`` (its training table, generator, synthetic
images and synthesis mode: the same generator store folder and the same images) trained with the
remedy's classifier options (:func:`~odmaug.benchmark.arm_specs.combined_arm`). The remedy is the text after the last ``+``;
``<arm>`` is any arm without options of its own other than ``real`` (``real+<remedy>`` is
``<remedy>``).
"""

from __future__ import annotations


from odmaug.benchmark.arms import Arm, REAL_ONLY, register_arm
from odmaug.config import Recipe
from odmaug.errors import OdmaugError


def arm_recipe(recipe: Recipe, arm: Arm) -> Recipe:
    """The recipe ``arm``'s classifiers train with: ``recipe`` itself for an arm without training
    options, else a copy whose ``classifier`` section has them.

    Raises:
        OdmaugError: options the classifier section rejects (one line).
    """
    if not arm.kind.training:
        return recipe
    from pydantic import ValidationError

    out = recipe.model_copy(deep=True)
    settings = {**recipe.classifier.model_dump(), **dict(arm.kind.training)}
    try:
        out.classifier = type(recipe.classifier).model_validate(settings)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(["classifier", *map(str, first["loc"])])  # a check of the whole section has no loc
        raise OdmaugError(f"benchmark arm {arm.spec}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    return out


register_arm("class-weighted", "real images, cross-entropy weighted by inverse grade frequency", REAL_ONLY,
             training={"class_weights": "inverse"})
register_arm("class-weighted-effective", "real images, cross-entropy weighted by effective numbers (Cui 2019)",
             REAL_ONLY, training={"class_weights": "effective"})
register_arm("balanced-sampler", "real images, grade-balanced batches, epoch as long as real's", REAL_ONLY,
             training={"balanced_sampling": True})
register_arm("focal", "real images, softmax focal loss (gamma: classifier.focal_gamma, 2)", REAL_ONLY,
             training={"loss": "focal"})
register_arm("mixup", "real images, mixup (Zhang et al. 2018, alpha 0.2) by timm", REAL_ONLY,
             training={"mixup_alpha": 0.2})
register_arm("cutmix", "real images, CutMix (Yun et al. 2019, alpha 1.0) by timm", REAL_ONLY,
             training={"cutmix_alpha": 1.0})
register_arm("corn", "real images, the ordinal CORN head (Shi et al. 2023)", REAL_ONLY, training={"head": "corn"})
