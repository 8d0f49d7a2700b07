"""Typed recipes: strict YAML loading, validation and ``--set section.key=value`` overrides.

A recipe is a YAML file with one mapping per stage (``data``, ``generator``, ``diffusion``,
``train``, ``sample``, ``augment``, ``classifier``, ``metrics``, ``benchmark``). Every section is a
pydantic model that forbids unknown keys, so a typo is an error that names the key, the section
and the file instead of a silently ignored setting.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from odmaug.errors import OdmaugError
from odmaug.yaml_strict import strict_safe_load


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticDataConfig(Section):
    """The built-in synthetic ordinal dataset (fundus-like discs, lesions grow with grade)."""

    counts: list[int] = Field(default_factory=lambda: [60, 30, 24, 16, 10])
    """Images per grade, before splitting into train/val/test."""
    native_size: int = Field(64, ge=16, le=512)
    """Resolution at which the images are drawn (then resized to ``data.image_size``)."""
    seed: int = 0
    """Seed of the drawings: the same seed gives the same images."""


class DataConfig(Section):
    """Where images come from and how they are shaped."""

    source: Literal["retinamnist", "synthetic", "folder", "manifest"] = "retinamnist"
    path: Optional[str] = None
    """Folder (``root/<grade>/*.png``) or manifest CSV, for ``folder`` and ``manifest`` sources."""
    data_dir: Optional[str] = None
    """Folder holding ``retinamnist.npz``; default ``$ODMAUG_DATA_DIR``, then the user cache."""
    num_classes: int = Field(5, ge=2, le=100)
    image_size: int = Field(32, ge=8, le=1024)
    crop_box: Optional[tuple[int, int, int, int]] = None
    """(left, top, right, bottom) in source pixels, applied before resizing (LIMUC: centre 128x128)."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    split_seed: int = 0
    """Seed of the stratified (and grouped) split for sources that have no split column."""
    group_pattern: Optional[str] = None
    """Regular expression with one capture group, searched in each file name for its patient (group)
    when splits are drawn, e.g. ``^(Patient\\d+)_`` for ``Patient012_left.jpg``; both eyes then land
    in one split. Folder and manifest sources without a group column; a name it misses is an error."""
    crop: Literal["none", "centre", "fundus"] = "none"
    """Per-image crop of real images before resizing: none (non-square images are squashed), centre
    (the central square) or fundus (the bright field of view, padded with black to a square)."""
    cache: bool = True
    """Keep decoded, cropped and resized file images on disk (one .npy each), so later stages skip decoding."""
    cache_dir: Optional[str] = None
    """Folder of that decode cache; None: ``$XDG_CACHE_HOME/odmaug/images`` (~/.cache)."""
    min_split_images: int = Field(10, ge=0)
    """Warn when a split of a folder or manifest source holds fewer images of a grade than this: with
    under ~10 images a grade's recall or F1 moves by 10 points or more per image (0: never warn)."""
    synthetic: SyntheticDataConfig = Field(default_factory=SyntheticDataConfig)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.source in ("folder", "manifest") and not self.path:
            raise ValueError(f"data.path is required when data.source is '{self.source}'")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must be below 1")
        if self.crop_box is not None:
            left, top, right, bottom = self.crop_box
            if not (0 <= left < right and 0 <= top < bottom):
                raise ValueError("data.crop_box must be (left, top, right, bottom) with left < right, top < bottom")
            if self.crop != "none":
                raise ValueError("data.crop_box and data.crop are alternatives: set one of them")
        if self.group_pattern is not None:
            import re

            try:
                groups = re.compile(self.group_pattern).groups
            except re.error as err:
                raise ValueError(f"data.group_pattern is not a regular expression: {err}") from None
            if groups != 1:
                raise ValueError(f"data.group_pattern needs exactly one capture group (has {groups}), e.g. ^(Patient\\d+)_")
        if self.source == "synthetic" and len(self.synthetic.counts) != self.num_classes:
            raise ValueError("data.synthetic.counts needs one count per grade (data.num_classes)")
        return self


class GeneratorConfig(Section):
    """The class-conditional U-Net of Ho et al. (``odmaug.diffusion.unet``)."""

    name: str = "unet"
    """Registered generator network (``odmaug.diffusion.unet.GENERATORS``)."""
    base_channels: int = Field(64, ge=8, le=1024)
    """Channels of the first level; the time/class embedding has 4x this width."""
    channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 2, 2])
    """Channel multiplier per resolution level (one level per entry; each level but the last halves H, W)."""
    num_res_blocks: int = Field(2, ge=1, le=8)
    """Residual blocks per level on the way down (one more on the way up)."""
    attention_resolutions: list[int] = Field(default_factory=lambda: [16])
    """Feature-map sizes (pixels) that get a self-attention block (Ho et al.: 16)."""
    num_heads: int = Field(1, ge=1, le=64)
    """Attention heads (must divide the channels at the attention levels)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout inside residual blocks."""


class OrdinalConfig(Section):
    """The ordinal loss of docs/method.md, section 2 (gamma = 0 gives the plain DM)."""

    gamma: float = Field(1.0, ge=0.0)
    """Weight of the ordinal term (1 in the paper; 0 = the DM baseline, no extra forward passes)."""
    mode: Literal["same-xt", "cross-image"] = "same-xt"
    """same-xt: one x_t evaluated under labels p, q, r. cross-image: real images of grades p, q, r
    (drawn from the whole training set) noised with the same eps and t."""
    triplets: Literal["random", "include-true"] = "random"
    """random: p < q < r uniform over all C-choose-3 triplets (3 extra evaluations per sample).
    include-true: triplets containing the sample's own grade, reusing its DM evaluation (2 extra)."""
    distance: Literal["l2", "squared"] = "l2"
    """l2: per-element norm of the difference (minimum = collinear and ordered); squared: eq. 6 literally."""
    spacing: Literal["none", "proportional"] = "none"
    """proportional: also ask d(p, q) / d(p, r) = (q - p) / (r - p) (beyond the paper)."""
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    """Share of the batch that gets the ordinal term (a cost knob)."""


class DiffusionConfig(Section):
    """The diffusion process and the training loss."""

    timesteps: int = Field(1000, ge=2, le=10000)
    """T, the number of noise levels."""
    schedule: Literal["linear", "cosine"] = "linear"
    """linear betas (Ho et al.) from beta_start to beta_end, or the cosine schedule of Nichol & Dhariwal."""
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    """Linear schedule: first and last beta as defined for T = 1000 (Ho et al.: 1e-4 .. 0.02)."""
    scale_betas: bool = True
    """Linear schedule: multiply beta_start and beta_end by 1000 / T (improved-diffusion), so every T
    reaches noise at its last step. false uses them as given (runs made before this setting existed);
    training refuses a schedule whose last step keeps signal (sqrt(abar_{T-1}) >= 0.01)."""
    p_uncond: float = Field(0.1, ge=0.0, lt=1.0)
    """Probability of dropping a label to the null class (classifier-free guidance)."""
    ordinal: OrdinalConfig = Field(default_factory=OrdinalConfig)


class TrainConfig(Section):
    """Generator training (``odmaug train-generator``)."""

    steps: int = Field(10000, ge=1)
    """Optimizer steps in total (a resumed run continues up to this number)."""
    batch_size: int = Field(32, ge=1)
    """GLOBAL batch: under torchrun with K processes each rank takes batch_size / K images."""
    lr: float = Field(2e-4, gt=0.0)
    """Adam learning rate."""
    lr_warmup: int = Field(0, ge=0)
    """Linear learning-rate warm-up over this many steps (0: constant lr from the start)."""
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0.0)
    grad_clip: Optional[float] = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value (None: no clipping)."""
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    ema_warmup: int = Field(100, ge=0)
    """For the first ema_warmup steps the EMA copies the weights; afterwards, s steps later, its decay is
    min(ema_decay, (1 + s) / (10 + s))."""
    hflip: bool = True
    """Random horizontal flips of training images."""
    vflip: bool = False
    """Random vertical flips of training images."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 autocast where the device computes bf16 natively (CUDA bf16, CPUs with AMX or
    AVX-512 BF16), else fp32. fp32 forces full precision; fp16 needs CUDA. Weights stay fp32."""
    compile: bool = False
    """Wrap the network in torch.compile (the first steps compile: 130 s for the 8.95 M network on a
    2-core AVX2 CPU, where it then trained no faster than eager; try it on GPUs)."""
    checkpoint_every: int = Field(1000, ge=1)
    """Write a checkpoint (and resume point) every this many steps, and at the end."""
    keep_checkpoints: int = Field(1, ge=1)
    """How many checkpoint folders to keep (the newest)."""
    sample_every: int = Field(1000, ge=1)
    """Write an EMA sample grid <run>/generator/samples/grid-<step>.png every this many steps, and at the end."""
    grid_per_grade: int = Field(8, ge=1, le=64)
    """Images per grade in the training sample grids (seeds 0.., fixed, so grids are comparable)."""
    log_every: int = Field(50, ge=1)
    """Log losses and speed to log.jsonl every this many steps."""


class SampleConfig(Section):
    """Sampling settings (``odmaug sample``, training grids and synthesis)."""

    sampler: Literal["ddim", "ddpm", "dpmpp-2m", "unipc"] = "ddim"
    """ddim (generalised update with eta), ancestral ddpm (posterior mean and variance), or the
    deterministic multistep ODE solvers dpmpp-2m (DPM-Solver++ (2M), Lu et al. 2022) and unipc
    (UniPC, Zhao et al. 2023), which need fewer steps for the same quality (eta is ignored)."""
    steps: int = Field(100, ge=1)
    """Denoising steps (at most diffusion.timesteps; ddpm with fewer steps samples the respaced chain)."""
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    """Which timesteps the steps visit (diffusers' timestep_spacing). trailing and linspace start at
    t = T - 1 for every step count; leading (diffusers' DDIM default) starts lower, at t = steps - 1
    once steps > T / 2, i.e. from an image that is not yet pure noise."""
    eta: float = Field(0.0, ge=0.0, le=1.0)
    """DDIM stochasticity: 0 deterministic, 1 = DDPM posterior variance."""
    guidance_scale: float = Field(2.0, ge=0.0)
    """s in eps = eps_u + s (eps_c - eps_u); s = 1 is the plain conditional model."""
    clip_x0: bool = True
    """Clip each predicted x0 to [-1, 1]."""
    batch_size: int = Field(64, ge=1)
    """Images denoised together (results do not depend on it)."""
    use_ema: bool = True
    """Sample with the EMA weights (else the raw training weights)."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Autocast precision of the network while sampling (as train.precision)."""
    compile: Union[bool, Literal["auto"]] = False
    """torch.compile the network for sampling: true, false, or auto = when a call denoises at least
    20,000 image-steps (400 images of 50 steps) on CUDA or on a CPU with a C++ compiler. Off by
    default: on a 2-core AVX2 CPU (fp32) it compiled in 36 s and sped sampling up only 1.05x
    (benchmarks/generator_speed.py); worth trying where convolutions are fast (GPUs, AMX CPUs)
    and the fused GroupNorm/SiLU/attention work is a larger share of a step."""


class AugmentConfig(Section):
    """Synthesis of scarce grades (``odmaug augment``) and balancing (``odmaug balance``)."""

    target_classes: str = "auto"
    """``auto`` (every grade below the target count), one grade ``4`` or several ``3,4``."""
    n: Optional[int] = Field(None, ge=1)
    """Images to synthesize per chosen grade (exclusive with ``to_count``)."""
    to_count: Optional[int] = Field(None, ge=1)
    """Fill each chosen grade up to this many training images, real ones included; with neither
    ``n`` nor ``to_count`` grades are filled up to the largest real grade count."""
    seed_start: int = Field(0, ge=0)
    """First seed of every grade: grade g gets the images ``<g>/<seed_start>.png, <seed_start+1>.png...``."""
    strategy: Literal["match-majority", "to-count", "oversample"] = "match-majority"
    """Balancing: fill every grade to the majority count, to ``to_count``, or repeat real images."""
    max_synthetic_share: float = Field(1.0, gt=0.0, le=1.0)
    """Cap on the share of added (synthetic or oversampled) images among a grade's training images."""
    filter_with: Optional[str] = None
    """Classifier folder (or run with ``classifier/``) trained on real data that grades synthetic
    images; None keeps every image."""
    max_grade_error: int = Field(1, ge=0)
    """With ``filter_with``: keep images whose predicted grade is within this of the intended grade."""


class ClassifierConfig(Section):
    """Severity classifier training (any timm model) and its train-time augmentation."""

    model: str = "resnet18"
    """A timm model name (``timm.list_models()``), created with ``num_classes`` = data.num_classes."""
    pretrained: Optional[str] = None
    """Local safetensors weights for the model; a head of another shape is skipped. None: random init."""
    image_size: Optional[int] = Field(None, ge=8, le=1024)
    """Resolution the classifier sees; None uses data.image_size."""
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    """Peak AdamW learning rate (after warm-up; cosine decay to zero afterwards)."""
    weight_decay: float = Field(0.05, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
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
    num_workers: int = Field(0, ge=0)
    """Worker processes that decode images into memory before training (0: decode in-process)."""


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
    min_per_grade: int = Field(20, ge=2)
    """A grade with fewer real or generated images than this is reported as "too few", not a number."""
    small_set: int = Field(2000, ge=1)
    """Below this many images FID is biased: the table marks the figure."""
    kid_subset_size: int = Field(1000, ge=2)
    """Images per KID subset (lowered to the smaller set's size when a set has fewer)."""
    kid_subsets: int = Field(100, ge=1)
    """Number of random subsets KID is averaged over (its std is over the same subsets)."""
    nearest_k: int = Field(3, ge=1)
    """k of the k-nearest-neighbour balls of precision/recall (Kynkaanniemi et al. 2019 use 3)."""
    batch_size: int = Field(64, ge=1)
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


class BenchmarkConfig(Section):
    """``odmaug benchmark``: which arms, how they are balanced, and how generators are judged."""

    arms: list[str] = Field(default_factory=lambda: ["real", "oversample", "dm", "odm"])
    """``real``, ``oversample``, ``dm``, ``odm`` and ``external:<name>=<folder or manifest>``."""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    """Classifier seeds, the same for every arm (paired differences use them)."""
    strategy: Literal["match-majority", "to-count"] = "match-majority"
    """How synthetic (and oversampling) arms fill the grades."""
    to_count: Optional[int] = Field(None, ge=1)
    max_synthetic_share: float = Field(1.0, gt=0.0, le=1.0)
    metrics_per_grade: int = Field(200, ge=0)
    """At least this many generated images per grade (beyond what balancing needs) for the
    per-grade FID/KID/precision/recall; the overall figures use a subset with the real grade mix."""
    extractors: list[str] = Field(default_factory=lambda: ["domain", "inception"])
    """``domain`` (the real arm's first-seed classifier) and ``inception`` (skipped without weights)."""

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, arms: list[str]) -> list[str]:
        if not arms:
            raise ValueError("benchmark.arms needs at least one arm")
        for arm in arms:
            if arm not in ("real", "oversample", "dm", "odm") and not (
                arm.startswith("external:") and "=" in arm and arm.split("=", 1)[0][9:] and arm.split("=", 1)[1]
            ):
                raise ValueError(f"unknown arm '{arm}' (use real, oversample, dm, odm or external:<name>=<path>)")
        if len(set(arms)) != len(arms):
            raise ValueError("benchmark.arms repeats an arm")
        return arms

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError("benchmark.seeds needs at least one seed and no repeats")
        return seeds


class Recipe(Section):
    """A whole recipe: every section with its defaults, plus a name, a seed and a device."""

    name: str = "run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)

    @field_validator("name")
    @classmethod
    def _name_is_path_safe(cls, value: str) -> str:
        if not value or any(ch in value for ch in "/\\\0") or value.startswith("."):
            raise ValueError("name must be a plain folder name (no slashes, not starting with '.')")
        return value

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-serialisable dict of every setting (defaults included)."""
        return self.model_dump(mode="json")


def _format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if first["type"] == "extra_forbidden":
        key, section = loc[-1], ".".join(loc[:-1]) or "top level"
        return f"{origin}: unknown key '{key}' in section '{section}'"
    where = ".".join(loc) or "recipe"
    msg = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return f"{origin}: {where}: {msg}{shown}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise OdmaugError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise OdmaugError(f"--set expects section.key=value, got '{text}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``section.key=value`` override applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise OdmaugError(f"--set {text}: '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def recipe_from_dict(raw: dict[str, Any], origin: str = "recipe", overrides: list[str] | None = None) -> Recipe:
    """Validate a recipe mapping (after overrides); raise OdmaugError with one line on failure."""
    if not isinstance(raw, dict):
        raise OdmaugError(f"{origin}: a recipe must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise OdmaugError(_format_validation_error(err, origin)) from None


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a recipe YAML file; ``None`` gives the defaults (plus overrides)."""
    if path is None:
        return recipe_from_dict({}, "defaults", overrides)
    path = Path(path)
    if not path.is_file():
        raise OdmaugError(f"recipe not found: {path}")
    try:
        raw = strict_safe_load(path.read_text(), str(path)) or {}  # a repeated key is an error, not last-wins
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise OdmaugError(f"{path}: not valid YAML{where}") from None
    recipe = recipe_from_dict(raw, str(path), overrides)
    if "name" not in raw and not any(o.split("=", 1)[0].strip() == "name" for o in overrides or []):
        recipe.name = path.stem
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text (every default written out)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
