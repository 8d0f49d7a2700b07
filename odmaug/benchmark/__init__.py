"""``odmaug benchmark``: does ODM augmentation help? Every stage, one results file, one report.

Stages, each a plan/run pair in its own module, each reading only what earlier stages wrote and
the real splits it is given (:class:`~odmaug.benchmark.stage.Splits`), so any of them can be re-run
alone and a protocol can run them over several splits:

1. :mod:`~odmaug.benchmark.generators`: the generators the arms need (DM = ODM with gamma 0);
2. :mod:`~odmaug.benchmark.synthesis_stage`: per set of synthetic images (from noise, or translated from
   real training images, the strength chosen on validation by :mod:`~odmaug.benchmark.selection`),
   the images balancing needs, plus ``metrics_per_grade`` per grade;
3. :mod:`~odmaug.benchmark.datasets`: one training table per arm and seed (validation and test
   stay real);
4. :mod:`~odmaug.benchmark.classifiers`: the same classifier configuration per arm and seed;
5. :mod:`~odmaug.benchmark.generator_metrics`: generative metrics and grade fidelity per set of
   synthetic images (domain features: the ``real`` arm's first-seed classifier; Inception when
   its weights are available);
6. :mod:`~odmaug.benchmark.results`: results.json, tables and the benchmark report
   (:mod:`odmaug.benchmark.report`).

Arms are a registry (:mod:`~odmaug.benchmark.arms`): a new arm is one registration; the cheap
remedies and ``<arm>+<remedy>`` combinations are :mod:`~odmaug.benchmark.remedies`, and the
report's opening comparison of every generator arm with the best of them is
:mod:`~odmaug.benchmark.cheap`. Expensive
outputs live in a store keyed by their inputs (:mod:`~odmaug.benchmark.store`): a stage whose
inputs are unchanged is reused, an interrupted one resumes (generators from their last checkpoint,
synthesis image by image, classifiers from their last epoch), and a generator asked for more
``train.steps`` continues the stored shorter run. Planning (every input checked before any work,
``--dry-run`` with time estimates) is :mod:`~odmaug.benchmark.plan` and
:mod:`~odmaug.benchmark.estimate`; :func:`run_benchmark` runs the stages in order.
"""

from odmaug.benchmark.arms import ARMS, Arm, ArmKind, register_arm
from odmaug.benchmark.arm_specs import generator_recipe, parse_arm
from odmaug.benchmark.generator_metrics import composition_matched
from odmaug.benchmark.plan import make_plan, plan_table
from odmaug.benchmark.results import summarise_arms
from odmaug.benchmark.seed_records import seed_record
from odmaug.benchmark.run import run_benchmark
from odmaug.benchmark.stage import Plan, Splits, Stage
from odmaug.benchmark.store import generator_folder, generator_key, generator_status, synthesis_folder
from odmaug.benchmark.synthesis_stage import synthesis_counts

__all__ = [
    "ARMS",
    "Arm",
    "ArmKind",
    "Plan",
    "Splits",
    "Stage",
    "composition_matched",
    "generator_folder",
    "generator_key",
    "generator_recipe",
    "generator_status",
    "make_plan",
    "parse_arm",
    "plan_table",
    "register_arm",
    "run_benchmark",
    "seed_record",
    "summarise_arms",
    "synthesis_counts",
    "synthesis_folder",
]
