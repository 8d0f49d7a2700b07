"""The ``sample`` section (how images are drawn) and the ``augment`` section (which images)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import AfterValidator, Field

from odmaug.config.section import MAX_BATCH, MAX_IMAGES, Section


def check_strength(value: float) -> float:
    """The one check of an SDEdit strength t0 / T: ``value`` when it is in (0, 1] (0 would keep the
    source, 1 starts from pure noise); raises ``ValueError("must be in (0, 1]")`` otherwise, which a
    section reports as one line naming the key or option (``--strength must be in (0, 1] (got 0)``)."""
    if not 0.0 < value <= 1.0:
        raise ValueError("must be in (0, 1]")
    return value


Strength = Annotated[float, AfterValidator(check_strength)]
"""An SDEdit strength in (0, 1]: ``augment.strength`` and each of ``benchmark.translate.strengths``."""


class SampleConfig(Section):
    """Sampling settings (``odmaug sample``, training grids and synthesis)."""

    sampler: str = "ddim"
    """A registered sampler (``odmaug.diffusion.samplers.SAMPLERS``): ddim (generalised update with
    eta), ancestral ddpm (posterior mean and variance), or the deterministic multistep ODE solvers
    dpmpp-2m (DPM-Solver++ (2M), Lu et al. 2022) and unipc (UniPC, Zhao et al. 2023), which need
    fewer steps for the same quality (eta is ignored). Checked against the registry by every
    command before any work, and by the sampling call itself."""
    steps: int = Field(100, ge=1, le=10000)
    """Denoising steps (at most diffusion.timesteps; ddpm with fewer steps samples the respaced chain)."""
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    """Which timesteps the steps visit (diffusers' timestep_spacing). trailing and linspace start at
    t = T - 1 for every step count; leading (diffusers' DDIM default) starts lower, at t = steps - 1
    once steps > T / 2, i.e. from an image that is not yet pure noise."""
    eta: float = Field(0.0, ge=0.0, le=1.0)
    """DDIM stochasticity: 0 deterministic, 1 = DDPM posterior variance."""
    guidance_scale: float = Field(2.0, ge=0.0, le=100.0)
    """s in eps = eps_u + s (eps_c - eps_u); s = 1 is the plain conditional model."""
    clip_x0: bool = True
    """Clip each predicted x0 to [-1, 1]."""
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    """Images denoised together (results do not depend on it)."""
    use_ema: bool = True
    """Sample with the EMA weights (else the raw training weights)."""
    ema_decay: Optional[float] = Field(None, ge=0.0, lt=1.0)
    """Which EMA to sample with: None, the run's primary (``train.ema_decay``); else one of the extra
    decays the run kept (``train.ema_decays``), the EMA length chosen after training (EDM2,
    Karras et al. 2024, section 3) without retraining. A recipe whose ``sample.ema_decay`` its
    training does not keep is refused when loaded; a decay the checkpoint lacks is one error line.
    Ignored with ``use_ema`` false."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Autocast precision of the network while sampling (as train.precision)."""
    compile: Union[bool, Literal["auto"]] = False
    """torch.compile the network for sampling: true, false, or auto = when a call denoises at least
    20,000 image-steps (400 images of 50 steps) on CUDA or on a CPU with a C++ compiler. Off by
    default: on a 2-core AVX2 CPU (fp32) it compiled in 36 s and sped sampling up only 1.05x
    (studies/generator_speed.py); worth trying where convolutions are fast (GPUs, AMX CPUs)
    and the fused GroupNorm/SiLU/attention work is a larger share of a step."""

    PIXEL_FIELDS: ClassVar[tuple[str, ...]] = (
        "sampler", "steps", "eta", "guidance_scale", "clip_x0", "precision", "timestep_spacing",
    )
    """The settings that decide an image's pixels: batch_size does not (batches are aligned),
    compile changes only float rounding, and the weights (use_ema, ema_decay) are recorded on their own
    (the synthesis folder records the weights file's digest)."""

    LATER_DEFAULTS: ClassVar[dict[str, Any]] = {"ema_decay": None}

    @property
    def loaded_ema_decay(self) -> Optional[float]:
        """The ``ema`` argument of :func:`odmaug.diffusion.load_generator`: ``ema_decay``, or None
        with ``use_ema`` false (``--no-ema`` samples the raw weights whatever decay the recipe names)."""
        return self.ema_decay if self.use_ema else None

    def pixel_settings(self) -> dict[str, Any]:
        """``{name: value}`` of :data:`PIXEL_FIELDS`, in that order (a synthesis folder's identity)."""
        return {name: getattr(self, name) for name in self.PIXEL_FIELDS}


class AugmentConfig(Section):
    """Synthesis of scarce grades (``odmaug augment``) and balancing (``odmaug balance``)."""

    target_classes: str = "auto"
    """``auto`` (every grade below the target count), one grade ``4`` or several ``3,4``."""
    n: Optional[int] = Field(None, ge=1, le=MAX_IMAGES)
    """Images to synthesize per chosen grade (exclusive with ``to_count``)."""
    to_count: Optional[int] = Field(None, ge=1, le=MAX_IMAGES)
    """Fill each chosen grade up to this many training images, real ones included; with neither
    ``n`` nor ``to_count`` grades are filled up to the largest real grade count."""
    seed_start: int = Field(0, ge=0, le=2**62)
    """First seed of every grade: grade g gets the images ``<g>/<seed_start>.png, <seed_start+1>.png...``."""
    strategy: str = "match-majority"
    """A registered balancing strategy (``odmaug.data.balance.STRATEGIES``): fill every grade to the
    majority count (``match-majority``), to ``to_count`` (``to-count``), or repeat real images (``oversample``)."""
    max_synthetic_share: float = Field(1.0, gt=0.0, le=1.0)
    """Cap on the share of added (synthetic or oversampled) images among a grade's training images."""
    filter_with: Optional[str] = None
    """Classifier folder (or run with ``classifier/``) trained on real data that grades synthetic
    images; None keeps every image."""
    max_grade_error: int = Field(1, ge=0, le=100)
    """With ``filter_with``: keep images whose predicted grade is within this of the intended grade."""
    strength: Strength = 0.6
    """SDEdit strength t0 / T in (0, 1] of ``augment --from-real`` and ``odmaug translate``: how much
    of a real source is noised away before it is denoised at another grade (1: from pure noise)."""

