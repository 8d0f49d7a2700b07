"""The evaluation sections: the severity ``classifier``, the generative ``metrics`` and the ``benchmark``."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from odmaug.config.executor import ExecutorConfig
from odmaug.config.sampling import Strength
from odmaug.config.section import MAX_BATCH, MAX_EPOCHS, MAX_IMAGES, Section, Seed


class ClassifierConfig(Section):
    """Severity classifier training (any timm model) and its train-time augmentation."""

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"synthetic_batch_share": None, "synthetic_label_smoothing": None,
                                                "loss": "cross_entropy", "focal_gamma": 2.0, "class_weights": None,
                                                "class_weights_beta": 0.999, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
                                                "head": "softmax"}

    model: str = "resnet18"
    """A timm model name (``timm.list_models()``), created with ``num_classes`` = data.num_classes."""
    pretrained: Optional[str] = None
    """``hub``: timm's own ImageNet weights for ``model`` (``timm.create_model(..., pretrained=True)``)
    from the Hugging Face cache, downloaded there unless ``$HF_HUB_OFFLINE`` or ``$ODMAUG_OFFLINE`` is
    set (offline and not cached: an error before any training). Otherwise a path to local safetensors
    weights for the model (never unpickled). A ViT's position embedding saved at another size is
    resampled (timm's ``resample_abs_pos_embed``); the head stays random when its shape differs
    (another grade count); any other tensor that does not fit is an error. None: random init."""
    image_size: Optional[int] = Field(None, ge=8, le=1024)
    """Resolution the classifier sees; None uses data.image_size."""
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    eval_batch_size: int = Field(256, ge=1, le=MAX_BATCH)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    """Peak AdamW learning rate (after warm-up; cosine decay to zero afterwards)."""
    weight_decay: float = Field(0.05, ge=0.0, le=10.0)
    warmup_epochs: float = Field(1.0, ge=0.0, le=MAX_EPOCHS)
    """Linear warm-up length in epochs (may be fractional)."""
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    balanced_sampling: bool = False
    """Draw training batches with a WeightedRandomSampler so every grade is equally likely."""
    augment: bool = True
    """Train-time augmentation: random flips, rotations and mild colour jitter (batched, on device)."""
    vflip: bool = True
    """Also flip vertically (fine for fundus and endoscopy images; horizontal flips are always on)."""
    rotation_degrees: float = Field(180.0, ge=0.0, le=180.0)
    """Random rotation in [-r, r] degrees (fundus images are round, so any angle is natural)."""
    color_jitter: float = Field(0.1, ge=0.0, le=0.5)
    """Relative strength of random brightness, contrast and saturation changes."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 autocast where the device runs it fast (CUDA with bf16, CPUs with bf16 units), else fp32."""
    num_workers: int = Field(0, ge=0, le=256)
    """Worker processes that decode images into memory before training (0: decode in-process)."""
    synthetic_batch_share: Optional[float] = Field(None, gt=0.0, lt=1.0)
    """Share of every training batch drawn from the synthetic rows, the rest from the other rows
    (real and oversampled). None: one uniform shuffle of all rows. Acts only on a training table
    with both kinds of rows; for the ``real`` and ``oversample`` arms it is inactive."""
    synthetic_label_smoothing: Optional[float] = Field(None, ge=0.0, lt=1.0)
    """Label smoothing of the synthetic rows' targets (the other rows keep ``label_smoothing``).
    None: every row takes ``label_smoothing``. Inactive for a table without synthetic rows."""

    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    """Training loss: cross-entropy, or multi-class softmax focal loss (Lin et al. 2017) with
    ``focal_gamma`` (:mod:`odmaug.classify.losses`)."""
    focal_gamma: float = Field(2.0, ge=0.0, le=10.0)
    """Focusing exponent of the focal loss (0: cross-entropy)."""
    class_weights: Optional[Literal["inverse", "effective"]] = None
    """Weight each image's loss by its grade: ``inverse`` grade frequency of the training table,
    or ``effective`` number of samples (Cui et al. 2019, ``class_weights_beta``). None: unweighted."""
    class_weights_beta: float = Field(0.999, gt=0.0, lt=1.0)
    """beta of the effective-number weights ``(1 - beta) / (1 - beta ** n)``."""

    mixup_alpha: float = Field(0.0, ge=0.0, le=10.0)
    """Mixup (Zhang et al. 2018) Beta(alpha, alpha) of each batch with its reverse, by ``timm.data.Mixup``
    (:mod:`odmaug.classify.mixing`); 0: off. Needs an even batch size."""
    cutmix_alpha: float = Field(0.0, ge=0.0, le=10.0)
    """CutMix (Yun et al. 2019) alpha, as ``mixup_alpha`` (both set: one or the other per batch); 0: off."""
    head: Literal["softmax", "corn"] = "softmax"
    """``softmax``: C logits and cross-entropy. ``corn``: the rank-consistent ordinal head of Shi, Cao &
    Raschka 2023, C - 1 conditional logits (:mod:`odmaug.classify.corn`); takes ``class_weights`` and
    label smoothing (of its binary targets), not ``loss: focal``, mixup or CutMix."""

    @model_validator(mode="after")
    def _mixing_alone(self):
        # checked here, not when a classifier starts: a benchmark would fail after its generators trained
        if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
            if self.loss != "cross_entropy" or self.class_weights is not None:
                raise ValueError("mixup_alpha / cutmix_alpha cannot be combined with loss: focal or class_weights")
            if self.batch_size % 2:
                raise ValueError(f"mixup_alpha / cutmix_alpha need an even batch_size (got {self.batch_size})")
            if self.synthetic_label_smoothing is not None:
                raise ValueError("mixup_alpha / cutmix_alpha cannot be combined with synthetic_label_smoothing")
        return self

    @model_validator(mode="after")
    def _corn_alone(self):
        # CORN trains binary tasks on hard grades: a softmax focal loss or mixed soft targets have no meaning there
        if self.head == "corn" and (self.loss != "cross_entropy" or self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            raise ValueError("head: corn cannot be combined with loss: focal, mixup_alpha or cutmix_alpha")
        return self



class MetricsConfig(Section):
    """Generative metrics: FID, KID and precision/recall, overall and per grade."""

    extractors: list[str] = Field(default_factory=lambda: ["inception"])
    """Feature extractors by name: ``inception`` (the standard FID Inception-V3) and/or
    ``domain:<classifier run or folder>`` (a severity classifier's penultimate features)."""
    inception_weights: Optional[str] = None
    """Local Inception-V3 FID weights (torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``
    or a safetensors copy). None: ``$ODMAUG_INCEPTION_WEIGHTS``, then the user cache, then a download."""
    image_size: Optional[int] = Field(None, ge=8, le=1024)
    """Side length both image sets are brought to before feature extraction; None: data.image_size."""
    min_per_grade: int = Field(20, ge=2, le=MAX_IMAGES)
    """A grade with fewer real or generated images than this is reported as "too few", not a number."""
    small_set: int = Field(2000, ge=1, le=MAX_IMAGES)
    """Below this many images FID is biased: the table marks the figure."""
    kid_subset_size: int = Field(1000, ge=2, le=MAX_IMAGES)
    """Images per KID subset (lowered to the smaller set's size when a set has fewer)."""
    kid_subsets: int = Field(100, ge=1, le=100_000)
    """Number of random subsets KID is averaged over (its std is over the same subsets)."""
    nearest_k: int = Field(3, ge=1, le=1000)
    """k of the k-nearest-neighbour balls of precision/recall (Kynkaanniemi et al. 2019 use 3)."""
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    """Images per feature-extraction batch."""
    cache: bool = True
    """Reuse the real set's features when the images, resolution and extractor are unchanged."""
    cache_dir: Optional[str] = None
    """Where real-set features are cached; None: ``$XDG_CACHE_HOME/odmaug/fid-stats`` (~/.cache)."""

    @model_validator(mode="after")
    def _check(self) -> "MetricsConfig":
        if not self.extractors or any(not e.strip() for e in self.extractors):
            raise ValueError("metrics.extractors needs at least one non-empty extractor name")
        if self.nearest_k >= self.min_per_grade:
            raise ValueError("metrics.nearest_k must be below metrics.min_per_grade")
        return self


class CrossValidationConfig(Section):
    """``benchmark.cv``: the folds of ``benchmark.protocol: cv``."""

    folds: int = Field(5, ge=2, le=20)
    """k: every image of the pool is in exactly one fold's test part."""
    scope: Literal["all", "train-val"] = "all"
    """The pool that is folded: ``all`` labelled images, or ``train-val`` (the train and val splits;
    an official test split then stays untouched by every fold, for a final external test)."""
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of each grade's non-test units (images or patients) in a fold's val part (above 0:
    every fold chooses its classifiers' epochs, and translation strengths, on its val part)."""


class TranslateConfig(Section):
    """``benchmark.translate``: the translation arms (``odm-translate``, ``dm-translate``)."""

    strengths: list[Strength] = Field(default_factory=lambda: [0.5, 0.7])
    """Candidate SDEdit strengths (t0 / T, each in (0, 1], checked as ``augment.strength`` is).
    With several, each pass tries every one (one synthesis and one first-seed classifier per
    candidate and arm) and keeps the one with the best validation QWK (ties: the larger strength);
    with one, it is used as is."""
    source_grades: str = "auto"
    """The grades translated from, as ``augment --source-grades``: ``auto`` (the neighbouring grades
    of each target) or a list such as ``"2,3"``."""

    @field_validator("source_grades", mode="before")
    @classmethod
    def _grades_as_text(cls, value):
        return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)

    @field_validator("strengths")
    @classmethod
    def _check_strengths(cls, strengths: list[float]) -> list[float]:
        if not strengths or len(set(strengths)) != len(strengths):
            raise ValueError("needs at least one strength and no repeats")
        return strengths


class FilterConfig(Section):
    """``benchmark.filter``: keep the synthetic images a real-data classifier grades near their grade."""

    max_grade_error: int = Field(1, ge=0, le=100)
    """Largest accepted |predicted - intended| grade (0: the exact grade), as ``augment --max-grade-error``."""


class JudgeConfig(Section):
    """``benchmark.judge``: the classifier whose penultimate features give the ``domain`` FID, KID,
    precision and recall, and that grades the generated images (grade fidelity)."""

    separate: bool = False
    """False: the real arm's first-seed classifier judges (no extra training). True: a classifier of
    its own, trained on the real training split with the ``classifier`` section and the settings below."""
    model: Optional[str] = None
    """The separate judge's timm model (None: ``classifier.model``)."""
    epochs: Optional[int] = Field(None, ge=1, le=MAX_EPOCHS)
    """The separate judge's epochs (None: ``classifier.epochs``)."""
    seed: Optional[Seed] = None
    """The separate judge's seed (None: the first of ``benchmark.seeds``)."""
    min_qwk: float = Field(0.5, ge=-1.0, le=1.0)
    """Below this test QWK the judge is reported as too weak to judge (console and report)."""
    min_real_precision: float = Field(0.5, ge=0.0, le=1.0)
    """Held-out real images (the val split) against the real training split, in the judge's
    features: a precision below this means its features cannot tell real images apart from
    anything else (degenerate), and every generator's figures are suspect."""

    @model_validator(mode="after")
    def _overrides_need_separate(self) -> "JudgeConfig":
        given = [k for k in ("model", "epochs", "seed") if getattr(self, k) is not None]
        if given and not self.separate:
            raise ValueError(f"{given[0]} applies to a separate judge: set benchmark.judge.separate=true")
        return self


class BenchmarkConfig(Section):
    """``odmaug benchmark``: which arms, how they are balanced, and how generators are judged."""

    arms: list[str] = Field(default_factory=lambda: ["real", "oversample", "dm", "odm"])
    """``real``, ``oversample``, ``dm``, ``odm``, ``dm-translate``, ``odm-translate``,
    ``external:<name>=<folder or manifest>``, the remedies (``class-weighted``, ``focal``, ``corn``...,
    :mod:`odmaug.benchmark.remedies`) and ``<arm>+<remedy>`` (e.g. ``odm+corn``)."""
    seeds: list[Seed] = Field(default_factory=lambda: [0, 1, 2])
    """Classifier seeds, the same for every arm (paired differences use them)."""
    protocol: Literal["holdout", "cv"] = "holdout"
    """``holdout``: one pass on the data's train/val/test splits. ``cv``: ``cv.folds`` passes, each
    with its own generators trained on that fold's training part only; results pool the folds'
    test parts (every image tested once)."""
    cv: CrossValidationConfig = Field(default_factory=CrossValidationConfig)
    strategy: Literal["match-majority", "to-count"] = "match-majority"
    """How synthetic (and oversampling) arms fill the grades."""
    to_count: Optional[int] = Field(None, ge=1, le=MAX_IMAGES)
    max_synthetic_share: float = Field(1.0, gt=0.0, le=1.0)
    metrics_per_grade: int = Field(200, ge=0, le=MAX_IMAGES)
    """At least this many generated images per grade (beyond what balancing needs) for the
    per-grade FID/KID/precision/recall; the overall figures use a subset with the real grade mix."""
    extractors: list[str] = Field(default_factory=lambda: ["domain", "inception"])
    """``domain`` (the judge's features, see ``judge``) and ``inception`` (skipped without weights)."""
    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    filter: Optional[FilterConfig] = None
    """None: every synthetic image is used. Set (e.g. ``--set benchmark.filter.max_grade_error=1``):
    every synthetic arm keeps only the images the pass's real arm's first-seed classifier grades
    within ``max_grade_error`` of their grade (ECC-DM-style); that classifier is trained before
    synthesis. A generated arm's rejected images are replaced by further seeds (a few rounds at
    most); an ``external:`` arm keeps what passes."""
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    """Per stage kind, what a job asks the scheduler for under ``odmaug benchmark --executor
    slurm|local`` (partition, GPUs, CPUs, memory, time); changes no result and no stage key."""

    @field_validator("arms")
    @classmethod
    def _arms_listed_once(cls, arms: list[str]) -> list[str]:
        if not arms:
            raise ValueError("needs at least one arm")
        if len(set(arms)) != len(arms):
            raise ValueError("repeats an arm")
        return arms

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("needs at least one seed and no repeats")
        return seeds
