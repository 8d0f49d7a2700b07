"""DM and ODM under today's recipe and candidate objectives at EQUAL WALL TIME, judged per checkpoint.

Full study (hours; resumable: run the same command again to continue or extend it)::

    OMP_NUM_THREADS=1 ODMAUG_DATA_DIR=<folder holding retinamnist.npz> ODMAUG_OFFLINE=1 \\
        python studies/convergence.py --work /tmp/convergence

Smoke (about two minutes: every stage at tiny size, recipes/smoke.yaml)::

    python studies/convergence.py --smoke            # again: no retraining, evaluations reused
    python studies/convergence.py --smoke --report   # tables and figure from the JSON alone
    python studies/convergence.py --smoke --diagnose today-odm

What it does (studies/convergence/ holds the parts):

1. Runs: each ``--config NAME=SET;SET`` (default ``today`` = the quickstart recipe as the study began, frozen in
   ``studies/convergence/quickstart_before.yaml``, and
   ``vpred-minsnr`` = v-prediction with min-SNR-5 weighting) in DM form (gamma 0) and ODM form.
2. Equal wall time (convergence/probes.py): the launcher (one process of 2 threads, or torchrun
   with 2 processes of 1 thread) is the one faster in a probe of the baseline (the first config's
   ODM form); every run's step time is probed in isolation, round-robin with the baseline, and it
   trains ``multiple x base_steps / cost ratio`` steps, where the baseline trains ``base_steps``
   (the recipe's 2,000) per multiple. Checkpoints at ``--multiples`` (1, 2, 4) x that wall time,
   a run continued with ``train-generator --resume`` (constant lr and EMA decay: the same as a
   longer run).
3. Per checkpoint (convergence/evaluate.py): ``--n`` images per grade with stochastic DDIM-50
   (eta 1) and deterministic UniPC-10 (seeds 0..n-1 per grade for every run); against the real
   training split, by ONE judge (the recipe's resnet18 trained once, its test QWK reported): domain
   FID [bootstrap] and KID overall and per grade, SWD on Laplacian-pyramid patches (ProGAN), grade
   fidelity QWK [bootstrap]; FID(UniPC-10) / FID(DDIM-50); a grid PNG under ``--work/grids``; and
   the eps-norm diagnosis per timestep bucket (convergence/diagnose.py).
4. The JSON (``--out``, default studies/results/convergence_<host flag>.json) is rewritten
   atomically after every checkpoint evaluation; ``--report`` prints markdown tables per multiple
   and writes ``<out stem>_fid_vs_wall.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, sampler_quality, the convergence package

from convergence.study import main  # noqa: E402

if __name__ == "__main__":
    main()
