"""How long will a benchmark take? Stage times from a short probe on this machine.

The probe times the unit each stage repeats, with the recipe's networks, batch sizes, precision
and device, on random weights and inputs (the speed does not depend on them): a few generator
training steps per generator arm (DM and ODM differ in cost), one denoising step of a synthesis
batch, a few classifier training batches and one evaluation batch. A stage's time is its count of
units times the unit's time: training steps left (plus the sample grids due), synthesis batches
per grade, epochs of batches plus validation, images to embed for the metrics.

Each stage that runs also pays a set-up: building its network and the first, slower call
(allocation, kernel choice), measured as the build time plus the first call's excess over the
later ones. Each unit repeats up to three times or about a second after that first call, so the
probe takes a few seconds at smoke size.

Not counted: reading and decoding the data, checkpoints, torch.compile warm-ups, Inception
features (their weights may be absent), and several processes under torchrun (the probe is one
process). Classifier stages of generated images are assumed not stored yet (their keys need the images).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from odmaug.benchmark.arms import Arm
from odmaug.benchmark.arm_specs import parse_arm
from odmaug.benchmark.plan import format_duration
from odmaug.benchmark.stage import Plan, Splits
from odmaug.config import Recipe

UNIT_BUDGET_S = 1.0  # stop repeating a unit once its timed calls took this long
UNIT_MAX_RUNS = 3


@dataclass
class UnitTimes:
    """Seconds per unit of work, measured by :func:`probe`."""

    generator_step: dict[str, float]  # generator name -> one training step at train.batch_size
    generator_setup: float  # building the generator, first-step excess
    sample_step: float  # one denoising step of a sample.batch_size batch
    sample_setup: float  # per synthesis call: the generator's build, first-call excess
    sample_batch: int  # images per synthesis batch (aligned as synthesis aligns it)
    classifier_batch: float  # one training batch at classifier.batch_size
    classifier_setup: float  # building the classifier, first-batch excess
    classifier_image: float  # one image through the classifier in evaluation
    probe_s: float = 0.0  # how long the probe took


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, max_runs: int = UNIT_MAX_RUNS,
          budget_s: float = UNIT_BUDGET_S) -> tuple[float, float]:
    """Seconds per call of ``fn`` after a first call, and how much longer that first call took."""
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    runs, start = 0, time.perf_counter()
    while runs < max_runs and (runs == 0 or time.perf_counter() - start < budget_s):
        fn()
        _sync(device)
        runs += 1
    per_call = (time.perf_counter() - start) / runs
    return per_call, max(0.0, first - per_call)


def _generator_step(recipe: Recipe, device: torch.device) -> tuple[float, float, torch.nn.Module]:
    """One training step of ``recipe``'s generator (its loss, batch and precision), its set-up, the network."""
    from odmaug.diffusion.losses import ClassPool, DiffusionLoss
    from odmaug.diffusion.schedule import NoiseSchedule
    from odmaug.diffusion.unet import build_generator
    from odmaug.precision import autocast, resolve_precision

    c, size, batch = recipe.data.num_classes, recipe.image_size("generator"), recipe.train.batch_size
    start = time.perf_counter()
    model = build_generator(recipe.generator, c, size).to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.lr, foreach=True)
    loss_fn, schedule = DiffusionLoss(recipe.diffusion, c), NoiseSchedule.from_config(recipe.diffusion)
    dtype = resolve_precision(recipe.train.precision, device)
    rng = torch.Generator().manual_seed(0)
    labels = torch.arange(batch) % c
    x = (torch.rand(batch, 3, size, size, generator=rng) * 2 - 1).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    pool = None
    if recipe.diffusion.ordinal.mode == "cross-image":
        pool_labels = torch.arange(2 * c) % c
        pool = ClassPool(torch.randint(0, 256, (2 * c, 3, size, size), dtype=torch.uint8).to(device), pool_labels, c)

    def step() -> None:
        with autocast(device, dtype):
            loss = loss_fn(model, x, labels, schedule, rng, pool)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    build = time.perf_counter() - start
    per_step, first_excess = timed(step, device)
    return per_step, build + first_excess, model


def _sample_step(recipe: Recipe, model: torch.nn.Module, device: torch.device) -> tuple[float, float, int]:
    """One denoising step (guidance included) of a synthesis batch, the first call's excess, the batch size."""
    from odmaug.augment.sampler import aligned
    from odmaug.diffusion.sampling import generate
    from odmaug.diffusion.schedule import NoiseSchedule

    s, c = recipe.sample, recipe.data.num_classes
    batch = aligned(s.batch_size)
    labels = [i % c for i in range(batch)]
    model.eval()
    schedule = NoiseSchedule.from_config(recipe.diffusion)  # built once, outside the timed calls

    one_step = s.model_copy(update={"steps": 1, "batch_size": batch, "compile": False})

    def step() -> None:
        generate(model, schedule, labels, list(range(batch)), one_step, device=device)

    per_step, first_excess = timed(step, device, max_runs=2)
    return per_step, first_excess, batch


def _classifier(recipe: Recipe, device: torch.device, n_train: int) -> tuple[float, float, float]:
    """One classifier training batch, its set-up, and one image in evaluation (at the evaluation batch size)."""
    from odmaug.classify.models import ClassifierMeta, create_model
    from odmaug.classify.predict import predict_logits
    from odmaug.classify.step import Stepper
    from odmaug.data.images import CLASSIFIER_MEAN, CLASSIFIER_STD

    cfg, c = recipe.classifier, recipe.data.num_classes
    size = recipe.image_size("classifier")
    start = time.perf_counter()
    model = create_model(cfg.model, c, size)
    meta = ClassifierMeta(cfg.model, c, size, CLASSIFIER_MEAN, CLASSIFIER_STD, recipe.data.crop_box)
    stepper = Stepper.build(model, meta, cfg, device)
    rng = torch.Generator().manual_seed(0)
    batch = max(2, min(cfg.batch_size, n_train))
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=rng).to(device)
    labels = (torch.arange(batch) % c).to(device)
    build = time.perf_counter() - start
    train_s, first_excess = timed(lambda: stepper.step(images, labels, rng), device)
    n_eval = min(cfg.eval_batch_size, 256)
    eval_images = images.repeat(-(-n_eval // batch), 1, 1, 1)[:n_eval]
    eval_s = timed(lambda: predict_logits(stepper.model, meta, eval_images, device, n_eval, stepper.amp_dtype), device)[0]
    return train_s, build + first_excess, eval_s / n_eval


def probe(recipe: Recipe, device: torch.device, arms: list[Arm], n_train: int) -> UnitTimes:
    """Time every unit the plan's stages need (see the module docstring); the global RNG is untouched."""
    started = time.perf_counter()
    generators = {a.kind.generator.name: a.kind.generator for a in arms if a.kind.generator is not None}
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        steps, gen_setup, model = {}, 0.0, None
        for name, generator in generators.items():
            steps[name], setup, model = _generator_step(generator.recipe(recipe), device)
            gen_setup = max(gen_setup, setup)  # the first build also pays one-off imports: count the larger
        sample_s, sample_excess, sample_batch = _sample_step(recipe, model, device) if model is not None else (0.0, 0.0, 1)
        train_s, clf_setup, eval_s = _classifier(recipe, device, n_train)
    return UnitTimes(steps, gen_setup, sample_s, gen_setup + sample_excess, sample_batch, train_s, clf_setup, eval_s,
                     time.perf_counter() - started)


def estimate_stages(plan: Plan, recipe: Recipe, splits: Splits, units: UnitTimes, counts: list[int]) -> float:
    """Fill every stage's ``seconds`` from ``units``; returns the total."""
    c, t, sample = recipe.data.num_classes, recipe.train, recipe.sample
    real_counts = splits.train.counts()
    n_val, n_test = len(splits.val), len(splits.test)
    image_step = units.sample_step / units.sample_batch  # one image, one denoising step
    arms = {a.label: a for a in plan.arms}
    for stage in plan.stages:
        if stage.kind == "generator":
            done = t.steps - stage.left
            # a grid at every multiple of sample_every still ahead, and one at the end
            grids = t.steps // t.sample_every - done // t.sample_every
            grids += int(t.steps % t.sample_every != 0 and stage.left > 0)
            grid_s = grids * c * t.grid_per_grade * sample.steps * image_step
            setup = units.generator_setup if stage.left else 0.0
            stage.seconds = setup + stage.left * units.generator_step[stage.name] + grid_s
        elif stage.kind == "synthesis":  # one call (one generator load); grades counted in whole batches
            # each, an upper bound by under a batch per grade (the call's batches run across grades)
            share = stage.left / max(1, sum(counts))
            batches = sum(math.ceil(n * share / units.sample_batch) for n in counts)
            setup = units.sample_setup if stage.left else 0.0
            # a translation runs only the steps at or below t0 = strength x T
            strength = 1.0 if stage.strength is None else stage.strength
            stage.seconds = batches * math.ceil(strength * sample.steps) * units.sample_step + setup
        elif stage.kind == "classifier":
            arm = arms.get(stage.arm) or parse_arm(stage.arm)  # the real arm trains even when not listed
            n_train = arm.kind.table.size(real_counts, recipe.benchmark)
            batch = max(2, min(recipe.classifier.batch_size, n_train))
            per_epoch = (n_train // batch) * units.classifier_batch + n_val * units.classifier_image
            evaluation = (n_val + n_test) * units.classifier_image
            stage.seconds = units.classifier_setup + stage.left * per_epoch + evaluation if stage.left else 0.0
        elif stage.kind == "metrics":  # grade fidelity; domain features of real, generated, grade-mix subset
            n_gen = len(plan.externals[stage.name]) if stage.name in plan.externals else sum(counts)
            n_images = n_gen + (real_counts.sum() + 2 * n_gen if "domain" in recipe.benchmark.extractors else 0)
            stage.seconds = units.classifier_setup + float(n_images) * units.classifier_image
    return float(sum(s.seconds or 0.0 for s in plan.stages))


def estimate_plan(plan: Plan, recipe: Recipe, passes: list[Splits], plans: list[Plan], device: torch.device) -> None:
    """Probe this machine once, fill the stages' ``seconds`` of every pass's plan (one per
    cross-validation fold; one for holdout) and say how in ``plan.note`` (``plan``: what is printed)."""
    from odmaug.benchmark.synthesis_stage import synthesis_counts

    units = probe(recipe, device, plans[0].arms, len(passes[0].train))
    total = sum(estimate_stages(p, recipe, splits, units, synthesis_counts(recipe, splits.train.counts()))
                for p, splits in zip(plans, passes))
    threads = torch.get_num_threads()
    skipped = ", Inception features" if "inception" in recipe.benchmark.extractors else ""
    plan.note = (f"time: {format_duration(total)} in all, an estimate from a {units.probe_s:.1f} s probe on this machine "
                 f"({device}, {threads} CPU thread{'s' if threads != 1 else ''}, one process); not counted: data loading, "
                 f"checkpoints{skipped}; classifiers of generated images assumed not stored yet. --no-estimate skips the probe.")
