"""Run folders: one folder per run, with its resolved recipe, environment record and JSONL log.

Layout (later stages add their sub-folders)::

    runs/<id>-<name>/
      config.yaml  env.json  log.jsonl
      generator/  synthetic/  datasets/  classifiers/  metrics/  report/

Every file that another stage reads (config, manifests, checkpoints) is written atomically: to a
temporary file in the same folder, flushed, then renamed over the target, so a crash leaves either
the old file or the new one, never half of one (:mod:`odmaug.atomic`; a failed write is one
``cannot write <path>: <reason>`` error).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from odmaug.atomic import atomic_write_json, atomic_write_text
from odmaug.config import Recipe, dump_recipe, load_recipe
from odmaug import tensorboard
from odmaug.errors import OdmaugError

RUNS_DIR_ENV = "ODMAUG_RUNS_DIR"


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (or of the odmaug source tree), or None."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_record(seed: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Versions, host, device and seed: enough to tell two runs' circumstances apart."""
    import numpy
    import torch

    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
        "seed": seed,
        "git_commit": git_commit(),
    }
    for name in ("torchvision", "timm", "sklearn", "pandas", "safetensors"):
        try:
            module = __import__(name)
            record[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            record[name] = None
    if torch.cuda.is_available():
        record["cuda_device"] = torch.cuda.get_device_name(0)
    return record


def default_runs_dir(runs_dir: str | Path | None = None) -> Path:
    """``--runs-dir``, else ``$ODMAUG_RUNS_DIR``, else ``./runs``."""
    if runs_dir:
        return Path(runs_dir)
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def legacy_overrides(config_path: Path) -> list[str]:
    """``--set`` overrides that keep a run folder made by an older odmaug meaning what it meant.

    Runs whose ``config.yaml`` predates ``diffusion.scale_betas`` were trained with unscaled linear
    betas (the same schedule at T = 1000; a noisier-ending one at other T), so they keep them.
    """
    import yaml

    try:
        raw = yaml.safe_load(Path(config_path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []  # load_recipe reports the unreadable file
    diffusion = raw.get("diffusion") if isinstance(raw, dict) else None
    if isinstance(diffusion, dict) and "scale_betas" not in diffusion:
        return ["diffusion.scale_betas=false"]
    return []


@dataclass
class Run:
    """A run folder and its standard paths."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        """``config.yaml``: the resolved recipe, every default filled in."""
        return self.root / "config.yaml"

    @property
    def env_path(self) -> Path:
        """``env.json``: versions, host, device and seed (:func:`environment_record`)."""
        return self.root / "env.json"

    @property
    def log_path(self) -> Path:
        """``log.jsonl``: one JSON event a line, appended by every stage."""
        return self.root / "log.jsonl"

    def subdir(self, name: str) -> Path:
        """``<run>/<name>/``, created on first use."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def recipe(self) -> Recipe:
        """The resolved recipe this run was made with."""
        if not self.config_path.is_file():
            raise OdmaugError(f"{self.root} is not an odmaug run folder (no config.yaml)")
        return load_recipe(self.config_path, legacy_overrides(self.config_path))

    def log(self, event: str, **fields: Any) -> None:
        """Append one JSON line ``{"time", "event", ...fields}`` to the run's log.

        Lines are appended whole with one ``write`` call, so a crash leaves at most a missing line.
        """
        record = {"time": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, default=_json_default) + "\n"
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(line)
        tensorboard.mirror(self.root, event, record)  # a no-op unless --log tensorboard

    def read_log(self, event: str | None = None) -> list[dict[str, Any]]:
        """The log's records (optionally only one event), skipping a torn last line."""
        if not self.log_path.is_file():
            return []
        records = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event is None or record.get("event") == event:
                records.append(record)
        return records


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


_RUN_ID = re.compile(r"^(\d{5})-")


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name, by the same rule as a recipe's ``name``.

    A label from the command line becomes part of a path, so ``../x`` or ``a/b`` would make the run
    folder somewhere else (or fail half-way with a traceback).

    Raises:
        OdmaugError: a slash, a backslash, a NUL, a leading '.', or an empty name.
    """
    try:
        return Recipe._name_is_path_safe(name)
    except ValueError as err:
        raise OdmaugError(f"run name '{name}': {err}") from None


def create_run(recipe: Recipe, runs_dir: str | Path | None = None, name: str | None = None) -> Run:
    """Make ``<runs_dir>/<id>-<name>/`` with ``config.yaml`` and ``env.json``.

    The id is one more than the largest id already in ``runs_dir``; creation retries if another
    process takes the same id at the same moment.

    Raises:
        OdmaugError: ``name`` (e.g. ``--name``) is not a plain folder name, checked by the rule of
            the recipe's own ``name`` before anything is made; the runs folder cannot be created.
    """
    label = check_run_name(name) if name is not None else recipe.name
    base = default_runs_dir(runs_dir)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OdmaugError(f"cannot create runs folder {base}: {err.strerror}") from None
    for _ in range(100):
        ids = [int(m.group(1)) for p in base.iterdir() if (m := _RUN_ID.match(p.name))]
        root = base / f"{max(ids, default=-1) + 1:05d}-{label}"
        try:
            root.mkdir()
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 concurrent creators
        raise OdmaugError(f"could not allocate a run folder in {base}")
    run = Run(root)
    atomic_write_text(run.config_path, dump_recipe(recipe))
    atomic_write_json(run.env_path, environment_record(recipe.seed, recipe.device))
    run.log("run_created", name=label)
    return run


RECORD_FILES = frozenset({"config.yaml", "env.json", "log.jsonl"})
"""What :func:`create_run` writes; a run folder holding nothing else has no output yet."""
START_EVENTS = frozenset({"run_created", "train_start"})
"""Log events written before any work is done; any other (a step, an epoch) is a record worth keeping."""


def has_no_output(root: Path) -> bool:
    """Whether ``root`` holds only :data:`RECORD_FILES` and empty folders (no checkpoint, no result),
    and its log records no work (only :data:`START_EVENTS`)."""
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_dir():
            if path.parent != root or path.name not in RECORD_FILES:
                return False
    return all(r.get("event") in START_EVENTS for r in Run(root).read_log())


def remove_if_no_output(run: Run) -> bool:
    """Delete a run folder a failed command made but wrote nothing into; return whether it did.

    Anything beyond the record (a checkpoint, a resumable classifier state, a result, a file a
    user put there) keeps the folder.
    """
    root = run.root
    if not root.is_dir() or not has_no_output(root):
        return False
    shutil.rmtree(root, ignore_errors=True)
    return not root.exists()


@contextmanager
def removed_if_it_fails_empty(run: Run) -> Iterator[Run]:
    """Yield ``run``; when the body raises (an error, Ctrl-C) before writing any output, remove it.

    Only for a folder the command itself just made: a run passed in by the user (``--resume``)
    is never removed.
    """
    try:
        yield run
    except BaseException as err:
        # typer.Exit / SystemExit with code 0 is a successful early return, not a failure
        if getattr(err, "exit_code", getattr(err, "code", 1)) not in (0, None):
            try:
                remove_if_no_output(run)
            except OSError:
                pass  # the original failure is the one to report
        raise


def open_run(path: str | Path) -> Run:
    """An existing run folder; a clear error when it is not one."""
    root = Path(path)
    if not root.is_dir():
        raise OdmaugError(f"run folder not found: {root}")
    if not (root / "config.yaml").is_file():
        raise OdmaugError(f"{root} is not an odmaug run folder (no config.yaml)")
    return Run(root)
