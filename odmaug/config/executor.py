"""``benchmark.executor``: what each kind of benchmark stage job asks a scheduler for
(``odmaug benchmark --executor slurm|local``, :mod:`odmaug.benchmark.executor`)."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import AfterValidator, Field

from odmaug.config.section import Section

MAX_JOB_MINUTES = 60 * 24 * 30
"""A job's time limit: at most 30 days (clusters cap it far lower)."""


def _one_word(value: Optional[str]) -> Optional[str]:
    if value is not None and (not value.strip() or any(c.isspace() for c in value)):
        raise ValueError("must be one word (a Slurm name)")
    return value


SlurmName = Annotated[Optional[str], AfterValidator(_one_word)]
"""A Slurm partition or account name: one word, or None for the cluster's default."""


class StageResources(Section):
    """What one job of a stage kind asks for: one task on one node (submitit's ``tasks_per_node=1``)."""

    partition: SlurmName = None
    """Slurm partition (``sbatch --partition``); None: the cluster's default. Ignored by ``--executor local``."""
    gpus: int = Field(1, ge=0, le=16)
    """GPUs of the job (``--gpus-per-node``; 0 for a CPU partition); ``--executor local`` sets
    ``CUDA_VISIBLE_DEVICES`` to that many."""
    cpus: int = Field(2, ge=1, le=1024)
    """CPU cores of the job (``--cpus-per-task``): data loading and, without a GPU, the work itself."""
    mem_gb: float = Field(16.0, gt=0.0, le=4096.0)
    """Memory of the job in GiB (``--mem``)."""
    time_min: int = Field(240, ge=1, le=MAX_JOB_MINUTES)
    """Time limit in minutes (``--time``; ``--executor local`` stops a job at it too). A job stopped at
    its limit leaves its stage resumable: re-run the benchmark and the stage continues."""


class ExecutorConfig(Section):
    """``benchmark.executor``: resources per stage kind when the benchmark's stages run as
    scheduler jobs (``--executor slurm`` or ``local``); unused without ``--executor``."""

    generator: StageResources = Field(default_factory=StageResources)
    """One job per generator (and cross-validation fold): trains, resumes or reuses it."""
    synthesis: StageResources = Field(default_factory=StageResources)
    """One job per set of synthetic images (and fold, and candidate strength)."""
    classifier: StageResources = Field(default_factory=StageResources)
    """One job per classifier (arm x seed x fold), the filter's classifier and each translation
    arm's strength selection."""
    results: StageResources = Field(default_factory=StageResources)
    """The last job: generative metrics, ``results.json`` and the report (every other stage reused)."""
    max_jobs: Optional[int] = Field(None, ge=1, le=100_000)
    """At most this many jobs of a wave running or queued at once (the next one is submitted as one
    ends); None: the whole wave at once under Slurm, one job per CPU core here under ``--executor local``."""
    account: SlurmName = None
    """Slurm account charged (``sbatch --account``); None: the user's default."""
    lock_wait_min: float = Field(60.0, ge=0.0, le=MAX_JOB_MINUTES)
    """How long a job waits for a stage another live job is building (a second submission of the
    same benchmark) before it fails naming the holder; it then reuses the finished stage."""
