"""Classifier training speed: images/s and wall time per epoch of the default quickstart classifier.

Measured side by side in one process, alternating, median of several repetitions:

- ``odmaug``: the library's training step (``odmaug.classify.step.Stepper`` over the shared
  ``odmaug.train_step.TrainStep``): images in memory as
  uint8, batched on-device augmentation, channels-last, bf16 autocast where the CPU supports it;
- ``odmaug fp32``: the same step in fp32;
- ``peer``: the loop a user typically writes (MedMNIST-style): a Dataset applying torchvision v2
  transforms image by image, a DataLoader, fp32 NCHW.

Also: FLOPs of one training step (``FlopCounterMode``) and the achieved FLOP/s next to matmul
ceilings measured in the same run, the bf16-vs-fp32 logit error of the fast path, the time to load
the images into memory, and an end-to-end ``train_classifier`` run (wall time per epoch, validation
included). Prints a table last; writes ``studies/results/classifier_speed.json``.

    python studies/classifier_speed.py --recipe recipes/quickstart.yaml --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.table import Table
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from odmaug.classify.models import ClassifierMeta, create_model
from odmaug.classify.predict import load_images
from odmaug.classify.step import Stepper, normalize
from odmaug.classify.datasets import training_splits
from odmaug.classify.train import train_classifier
from odmaug.precision import autocast, resolve_precision
from odmaug.config import load_recipe
from odmaug.console import console
from odmaug.data.images import CLASSIFIER_MEAN, CLASSIFIER_STD
from odmaug.atomic import atomic_write_json
from odmaug.runs import environment_record

ROOT = Path(__file__).resolve().parents[1]


class PeerDataset(Dataset):
    """Per-image torchvision v2 augmentation, as a typical training script does it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg) -> None:
        from torchvision.transforms import v2

        jitter = cfg.color_jitter
        self.images, self.labels = images, labels
        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(cfg.rotation_degrees),
            v2.ColorJitter(jitter, jitter, jitter), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CLASSIFIER_MEAN, CLASSIFIER_STD),
        ])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def make_odmaug(recipe, images, labels, precision: str, seed: int):
    """A closure running ``n`` library training steps."""
    cfg = recipe.classifier.model_copy(update={"precision": precision})
    size = images.shape[-1]
    torch.manual_seed(seed)
    meta = ClassifierMeta(cfg.model, recipe.data.num_classes, size)
    stepper = Stepper.build(create_model(cfg.model, recipe.data.num_classes, size), meta, cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    b = cfg.batch_size

    def run(n: int) -> None:
        for _ in range(n):
            idx = torch.randint(0, len(labels), (b,), generator=gen)
            stepper.step(images[idx], labels[idx], gen)

    return run, stepper


def make_peer(recipe, images, labels, seed: int):
    """A closure running ``n`` steps of the plain per-image-transform loop (fp32, NCHW)."""
    cfg = recipe.classifier
    torch.manual_seed(seed)
    model = create_model(cfg.model, recipe.data.num_classes, images.shape[-1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = DataLoader(PeerDataset(images, labels, cfg), batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    batches = iter(loader)

    def run(n: int) -> None:
        nonlocal batches
        model.train()
        for _ in range(n):
            try:
                x, y = next(batches)
            except StopIteration:
                batches = iter(loader)
                x, y = next(batches)
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Achieved GFLOP/s of an n x n matmul in ``dtype`` (median)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_flops(stepper: Stepper, images: torch.Tensor, labels: torch.Tensor) -> float:
    """FLOPs of one forward + backward at the configured batch size (counted in fp32)."""
    model = stepper.model
    x = normalize(images[: labels.shape[0]].float() / 255, stepper.meta).contiguous(memory_format=torch.channels_last)
    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), labels).backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bf16_logit_error(stepper: Stepper, images: torch.Tensor) -> dict[str, float]:
    """Relative error of eval-mode bf16-autocast logits against fp32, and argmax agreement."""
    model, meta = stepper.model.eval(), stepper.meta
    x = normalize(images.float() / 255, meta).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x).float()
        with autocast(torch.device("cpu"), torch.bfloat16):
            fast = model(x).float()
    stepper.model.train()
    return {"relative_error": float((fast - ref).norm() / ref.norm()),
            "argmax_agreement": float((fast.argmax(1) == ref.argmax(1)).float().mean())}


def time_variants(variants: dict, reps: int, steps: int) -> dict[str, list[float]]:
    """Seconds of ``steps`` steps of every variant, ``reps`` times, alternating (after a warm-up)."""
    for run in variants.values():  # warm-up: kernel selection, allocator
        run(2)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, run in variants.items():
            t0 = time.perf_counter()
            run(steps)
            times[name].append(time.perf_counter() - t0)
    return times


def variant_rows(times: dict[str, list[float]], steps: int, batch_size: int, flops: float, n_train: int) -> dict:
    """Per variant: images/s, seconds per step and epoch, GFLOP/s and the speed-up over the peer (last)."""
    batch_images = steps * batch_size
    rows = {}
    for name, values in times.items():
        per_step = statistics.median(values) / steps
        rows[name] = {"images_per_second": batch_images / statistics.median(values), "seconds_per_step": per_step,
                      "gflops_per_second": flops / per_step / 1e9,
                      "seconds_per_epoch_est": n_train / (batch_images / statistics.median(values)), "reps": values}
    peer_name = list(rows)[-1]
    for row in rows.values():
        row["speedup_vs_peer"] = row["images_per_second"] / rows[peer_name]["images_per_second"]
    return rows


def end_to_end(recipe, train, val, test, epochs: int) -> dict | None:
    """Wall time of ``train_classifier`` for ``epochs`` epochs (validation included)."""
    if epochs <= 0:
        return None
    e2e_recipe = recipe.model_copy(deep=True)
    e2e_recipe.classifier.epochs = epochs
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train_classifier(e2e_recipe, train, val, test, Path(tmp) / "c", 0, "cpu", show_progress=False)
        wall = time.perf_counter() - t0
    history = result.history
    steady = history[1:] or history
    return {
        "epochs": epochs,
        "wall_seconds": wall,
        "seconds_per_epoch_train": [h["seconds"] for h in history],
        "images_per_second_train": [h["images_per_second"] for h in history],
        "steady_images_per_second": statistics.median(h["images_per_second"] for h in steady),
        "steady_seconds_per_epoch": statistics.median(h["seconds"] for h in steady),
        "wall_seconds_per_epoch_incl_validation": wall / epochs,
    }


def print_report(record: dict, args) -> None:
    rows, ceilings, flops = record["variants"], record["ceilings"], record["step_gflop"] * 1e9
    table = Table(title=f"{record['model']} at {record['image_size']}px, batch {record['batch_size']}, "
                        f"{record['threads']} threads (median of {args.reps} x {args.steps} steps)", title_justify="left")
    for column in ("variant", "img/s", "s/epoch", "GFLOP/s", "vs peer"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in rows.items():
        table.add_row(name, f"{row['images_per_second']:.0f}", f"{row['seconds_per_epoch_est']:.1f}",
                      f"{row['gflops_per_second']:.0f}", f"{row['speedup_vs_peer']:.2f}x")
    console.print(f"one training step: {flops / 1e9:.1f} GFLOP; ceilings here: fp32 matmul "
                  f"{ceilings['fp32_matmul_gflops']:.0f}, bf16 matmul {ceilings['bf16_matmul_gflops']:.0f} GFLOP/s; "
                  f"bf16 logits vs fp32: rel. error {record['bf16_vs_fp32_logits']['relative_error']:.4f}, "
                  f"argmax agreement {record['bf16_vs_fp32_logits']['argmax_agreement']:.3f}; "
                  f"loading {record['train_images']} images: {record['load_seconds']:.2f} s")
    e2e = record["end_to_end"]
    if e2e:
        console.print(f"end to end ({args.epochs} epochs, train_classifier): {e2e['steady_images_per_second']:.0f} "
                      f"img/s, {e2e['steady_seconds_per_epoch']:.1f} s/epoch training, "
                      f"{e2e['wall_seconds_per_epoch_incl_validation']:.1f} s/epoch wall incl. validation and loading")
    console.print(table)
    console.print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.yaml"))
    parser.add_argument("--set", action="append", default=[], help="recipe override, e.g. classifier.model=resnet10t")
    parser.add_argument("--reps", type=int, default=5, help="alternating repetitions per variant")
    parser.add_argument("--steps", type=int, default=4, help="training steps per repetition")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end run (0: skip it)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(ROOT / "studies" / "results" / "classifier_speed.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.set)
    cfg = recipe.classifier
    size = cfg.image_size or recipe.data.image_size
    train, val, test = training_splits(recipe)

    start = time.perf_counter()
    images = load_images(train, size, recipe.data.crop_box)  # uint8 [N, 3, S, S]
    load_seconds = time.perf_counter() - start
    labels = torch.from_numpy(train.labels.copy())

    fast_precision = str(resolve_precision(cfg.precision, torch.device("cpu"))).removeprefix("torch.")
    odm_run, stepper = make_odmaug(recipe, images, labels, cfg.precision, 0)
    times = time_variants({
        f"odmaug ({fast_precision}, channels-last, batched aug)": odm_run,
        "odmaug (fp32, channels-last, batched aug)": make_odmaug(recipe, images, labels, "fp32", 0)[0],
        "peer (fp32, per-image v2 transforms, DataLoader)": make_peer(recipe, images, labels, 0),
    }, args.reps, args.steps)
    flops = step_flops(stepper, images, labels[: cfg.batch_size])
    ceilings = {"fp32_matmul_gflops": matmul_ceiling(torch.float32), "bf16_matmul_gflops": matmul_ceiling(torch.bfloat16)}
    rows = variant_rows(times, args.steps, cfg.batch_size, flops, len(train))
    record = {
        "recipe": args.recipe, "overrides": args.set, "model": cfg.model, "image_size": size,
        "batch_size": cfg.batch_size, "train_images": len(train), "threads": torch.get_num_threads(),
        "load_seconds": load_seconds, "step_gflop": flops / 1e9, "ceilings": ceilings,
        "bf16_vs_fp32_logits": bf16_logit_error(stepper, images[:256]),
        "variants": rows, "end_to_end": end_to_end(recipe, train, val, test, args.epochs),
        "environment": environment_record(),
    }
    atomic_write_json(args.out, record)
    print_report(record, args)


if __name__ == "__main__":
    main()
