"""The generator's sections: the network (``generator``), the process and loss (``diffusion``,
``diffusion.ordinal``) and its training (``train``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import Field, model_validator

from odmaug.config.section import MAX_BATCH, MAX_STEPS, Count, Fraction, Section


class GeneratorConfig(Section):
    """The class-conditional U-Net of Ho et al. (``odmaug.diffusion.unet``)."""

    name: str = "unet"
    """Registered generator network (``odmaug.diffusion.unet.GENERATORS``)."""
    base_channels: int = Field(64, ge=8, le=1024)
    """Channels of the first level; the time/class embedding has 4x this width."""
    channel_mult: list[Count] = Field(default_factory=lambda: [1, 2, 2, 2], min_length=1)
    """Channel multiplier per resolution level (one level per entry; each level but the last halves H, W)."""
    num_res_blocks: int = Field(2, ge=1, le=8)
    """Residual blocks per level on the way down (one more on the way up)."""
    attention_resolutions: list[Count] = Field(default_factory=lambda: [16])
    """Feature-map sizes (pixels) that get a self-attention block (Ho et al.: 16)."""
    num_heads: int = Field(1, ge=1, le=64)
    """Attention heads (must divide the channels at the attention levels)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout inside residual blocks."""


class OrdinalConfig(Section):
    """The ordinal loss of docs/method.md, section 2 (gamma = 0 gives the plain DM)."""

    gamma: float = Field(1.0, ge=0.0, le=1000.0)
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
    prediction: str = "eps"
    """A registered objective (``odmaug.diffusion.parameterization.OBJECTIVES``), what the network
    outputs: eps, the noise (Ho et al. 2020), or v = sqrt(abar) eps - sqrt(1 - abar) x0
    (Salimans & Ho 2022), the MSE target then. The ordinal term always compares eps estimates (v is
    converted first), so gamma keeps its meaning; the run records it and every sampler converts."""
    snr_gamma: Optional[float] = Field(None, gt=0.0, le=1000.0)
    """Min-SNR-gamma weighting of the DM MSE (Hang et al. 2023; diffusers' --snr_gamma, usually 5): each
    sample's MSE times min(SNR_t, gamma) / SNR_t (eps) or / (SNR_t + 1) (v). None: unweighted."""
    zero_terminal_snr: bool = False
    """Rescale the betas so that abar_{T-1} = 0 (Lin et al. 2024, algorithm 1; diffusers'
    rescale_betas_zero_snr): the last training step is pure noise, as sampling's start. Needs prediction v."""
    ordinal: OrdinalConfig = Field(default_factory=OrdinalConfig)

    @model_validator(mode="after")
    def _check(self) -> "DiffusionConfig":
        if self.zero_terminal_snr and self.prediction != "v":
            # eps gives x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar): undefined where abar_{T-1} = 0
            raise ValueError("diffusion.zero_terminal_snr needs diffusion.prediction=v (eps gives no x0 at abar_T = 0)")
        return self


class TrainConfig(Section):
    """Generator training (``odmaug train-generator``)."""

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"lr_schedule": "constant", "lr_decay_steps": None, "lr_min_ratio": 0.0,
                                                "ema_decays": []}

    steps: int = Field(10000, ge=1, le=MAX_STEPS)
    """Optimizer steps in total (a resumed run continues up to this number)."""
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    """GLOBAL batch: under torchrun with K processes each rank takes batch_size / K images."""
    lr: float = Field(2e-4, gt=0.0, le=1.0)
    """Adam learning rate."""
    lr_warmup: int = Field(0, ge=0, le=MAX_STEPS)
    """Linear learning-rate warm-up over this many steps (0: constant lr from the start)."""
    lr_schedule: Literal["constant", "cosine", "inverse-sqrt"] = "constant"
    """After the warm-up (:mod:`odmaug.diffusion.lr_schedule`, docs/method.md): constant lr; cosine
    decay (diffusers' get_cosine_schedule_with_warmup) to ``lr_min_ratio * lr`` at step
    ``lr_decay_steps``, then flat; inverse-sqrt, ``lr * min(s / lr_warmup, 1) / sqrt(max(s / t_ref, 1))``
    with ``t_ref = lr_decay_steps or lr_warmup`` (EDM2's learning_rate_schedule, Karras et al. 2024). Neither depends on
    ``train.steps``: a run resumed with more steps continues the same schedule, as the store assumes."""
    lr_decay_steps: Optional[int] = Field(None, ge=1, le=MAX_STEPS)
    """cosine: the step at which the decay ends (required; usually train.steps of the first run).
    inverse-sqrt: t_ref, the step from which lr falls as 1/sqrt(step) (None: lr_warmup)."""
    lr_min_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """cosine only: the lr at and after ``lr_decay_steps`` as a fraction of ``lr`` (diffusers: 0)."""
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    """Adam's (beta1, beta2), each in [0, 1)."""
    weight_decay: float = Field(0.0, ge=0.0, le=10.0)
    grad_clip: Optional[float] = Field(1.0, gt=0.0, le=1e6)
    """Clip the global gradient norm to this value (None: no clipping)."""
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    ema_warmup: int = Field(100, ge=0, le=MAX_STEPS)
    """For the first ema_warmup steps the EMA copies the weights; afterwards, s steps later, its decay is
    min(ema_decay, (1 + s) / (10 + s))."""
    ema_decays: list[Fraction] = Field(default_factory=list, max_length=8)
    """Extra EMAs kept beside the primary ``ema_decay`` (same warm-up and ramp), each saved in every
    checkpoint as ``ema-<decay>.safetensors``, so the best decay can be chosen after training
    (``load_generator(run, ema=decay)``) without retraining. Each in [0, 1), distinct, not ema_decay."""
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
    checkpoint_every: int = Field(1000, ge=1, le=MAX_STEPS)
    """Write a checkpoint (and resume point) every this many steps, and at the end."""
    keep_checkpoints: int = Field(1, ge=1, le=1000)
    """How many checkpoint folders to keep (the newest)."""
    sample_every: int = Field(1000, ge=1, le=MAX_STEPS)
    """Write an EMA sample grid <run>/generator/samples/grid-<step>.png every this many steps, and at the end."""
    grid_per_grade: int = Field(8, ge=1, le=64)
    """Images per grade in the training sample grids (seeds 0.., fixed, so grids are comparable)."""
    log_every: int = Field(50, ge=1, le=MAX_STEPS)
    """Log losses and speed to log.jsonl every this many steps."""

    @model_validator(mode="after")
    def _check_schedule(self) -> "TrainConfig":
        if self.lr_schedule == "cosine" and (self.lr_decay_steps is None or self.lr_decay_steps <= self.lr_warmup):
            # not train.steps: a run continued to more steps would change its past schedule (odmaug.benchmark.store)
            raise ValueError("train.lr_schedule=cosine needs train.lr_decay_steps above train.lr_warmup "
                             "(the step where the decay ends, e.g. train.steps)")
        if self.lr_schedule == "inverse-sqrt" and not (self.lr_decay_steps or self.lr_warmup):
            raise ValueError("train.lr_schedule=inverse-sqrt needs train.lr_warmup or train.lr_decay_steps (t_ref)")
        if self.lr_schedule == "constant" and self.lr_decay_steps is not None:
            raise ValueError("train.lr_decay_steps does nothing with train.lr_schedule=constant")
        if self.lr_schedule != "cosine" and self.lr_min_ratio != 0.0:
            raise ValueError("train.lr_min_ratio applies to train.lr_schedule=cosine only")
        if len(set(self.ema_decays)) != len(self.ema_decays) or self.ema_decay in self.ema_decays:
            raise ValueError("train.ema_decays must be distinct and differ from train.ema_decay")
        return self

