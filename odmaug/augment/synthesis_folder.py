"""The synthesis output folder: ``<out>/<grade>/<seed>.png``, ``synthesis.json`` and ``manifest.csv``.

Crash safety comes from three rules:

1. every PNG is written to a temporary file and renamed, so a file with a final name is complete
   (a kill leaves at most a ``.<name>.*.tmp`` file, removed by the next run);
2. ``synthesis.json`` names the checkpoint and the settings that decide the pixels; a folder made
   with others is refused (or, with ``force``, emptied first), so images are never mixed;
3. the manifest is rebuilt from one scan of the files on disk and written atomically, so it never
   lists an image that is not there, and never twice.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd
from PIL import Image

from odmaug.atomic import atomic_path, atomic_write_json
from odmaug.augment.plan import Item
from odmaug.data.pixels import png_image
from odmaug.errors import OdmaugError

SYNTHESIS_FILE = "synthesis.json"
MANIFEST_FILE = "manifest.csv"
FORMAT_VERSION = 1
IDENTITY_KEYS = (
    "checkpoint_id", "num_classes", "image_size", "sampler", "steps", "eta", "guidance_scale", "clip_x0", "precision",
    "timestep_spacing",
)
"""What decides an image's pixels besides its grade and seed (``synthesis.json`` -> ``identity``)."""
MANIFEST_COLUMNS = [
    "path", "label", "split", "group", "source",
    "generator_run", "checkpoint_id", "seed", "sampler", "steps", "guidance_scale", "eta",
]
_PNG_NAME = re.compile(r"^(0|[1-9]\d*)\.png$")
_OWN_FILES = {"synthesis.json", "grading.csv", "grid.png", ".odmaug.lock"}  # the lock: odmaug.augment.lock
_OWN_FILE = re.compile(r"^(manifest.*\.csv|\..*\.tmp)$")


def rank_manifest_name(rank: int) -> str:
    """The manifest part one rank writes under ``torchrun``."""
    return f"manifest.rank{rank}.csv"


def is_valid_png(path: str | Path, image_size: int, mode: str = "RGB") -> bool:
    """Whether ``path`` decodes completely as a PNG of ``mode`` (RGB, L, I;16) and ``image_size`` x ``image_size``."""
    try:
        with Image.open(path) as img:
            if img.format != "PNG" or img.mode != mode or img.size != (image_size, image_size):
                return False
            img.load()  # decodes every row: a truncated file raises here
        return True
    except Exception:  # noqa: BLE001 - any decoding failure means "regenerate it"
        return False


@dataclass
class Scan:
    """One listing of the folder."""

    images: dict[Item, Path] = field(default_factory=dict)
    temporary: list[Path] = field(default_factory=list)


class SynthesisFolder:
    """One synthesis output folder, for one checkpoint and one set of sampling settings."""

    def __init__(self, root: str | Path, image_size: int, num_classes: int, mode: str = "RGB") -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.num_classes = num_classes
        self.mode = mode  # the PNGs' Pillow mode (odmaug.data.pixels.png_mode): RGB, L or I;16

    @property
    def record_path(self) -> Path:
        return self.root / SYNTHESIS_FILE

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_FILE

    def path(self, item: Item) -> Path:
        return self.root / str(item.grade) / f"{item.seed}.png"

    # -- identity -----------------------------------------------------------------------------
    def read_record(self) -> Optional[dict[str, Any]]:
        """``synthesis.json`` as a dict, None when absent; an error when unreadable."""
        import json

        if not self.record_path.is_file():
            return None
        try:
            record = json.loads(self.record_path.read_text())
            # Folders written before timestep_spacing was recorded were all made with "leading".
            record["identity"].setdefault("timestep_spacing", "leading")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise OdmaugError(f"{self.record_path}: not a synthesis record; use another --out or --force") from None
        return record

    def needs_replacing(self, record: dict[str, Any], force: bool = False) -> bool:
        """Whether the folder's images must go before ``record`` can be used (writes nothing).

        Returns False for a new folder or one made with the same identity (resume).

        Raises:
            OdmaugError: the folder holds images of another checkpoint or settings (or of unknown
                origin, or its record is damaged) and ``force`` is False.
        """
        identity = record["identity"]
        foreign = self.foreign_file()
        if foreign is not None:  # even with force: never delete or mix with files synthesis did not write
            raise OdmaugError(
                f"{self.root} holds files that odmaug's synthesis did not write (e.g. {foreign}); synthetic "
                "images must not mix with real ones: use a new or empty --out"
            )
        try:
            old = self.read_record()
        except OdmaugError:
            if not force:
                raise
            return True
        if old is not None:
            if old.get("identity") == identity:
                return False  # same checkpoint and settings: resume (even with force, nothing to replace)
            if not force:
                keys = [*IDENTITY_KEYS, *sorted(set(old["identity"]) | set(identity))]
                key = next(k for k in keys if old["identity"].get(k) != identity.get(k))
                weights = (f" (weights {old.get('weights')}, now {record.get('weights')})"
                           if key == "checkpoint_id" and old.get("weights") != record.get("weights") else "")
                raise OdmaugError(
                    f"{self.root} holds images made with {key}={old['identity'].get(key)!r} (now {identity.get(key)!r})"
                    f"{weights}; use another --out, or --force to replace them"
                )
            return True
        images = self.scan().images
        if images and not force:
            raise OdmaugError(
                f"{self.root} holds {len(images)} images without {SYNTHESIS_FILE} (unknown checkpoint "
                "and settings); use another --out, or --force to replace them"
            )
        return bool(images)

    def prepare(self, record: dict[str, Any], force: bool = False) -> int:
        """Make the folder hold images of ``record['identity']`` only; return how many were removed.

        Raises:
            OdmaugError: as :meth:`needs_replacing`.
        """
        replace = self.needs_replacing(record, force)
        if self.read_record_quietly() is not None and not replace:
            return 0
        scan = self.scan() if replace else Scan()
        # Remove the old images before the new record appears: a crash in between leaves the old
        # record, so the next run still refuses instead of mixing.
        stale = [*scan.images.values(), *scan.temporary, *self.root.glob("manifest*.csv"), self.root / "grading.csv"]
        for path in stale if replace else []:
            path.unlink(missing_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.record_path, {**record, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        return len(scan.images)

    def read_record_quietly(self) -> Optional[dict[str, Any]]:
        """``synthesis.json`` or None (absent or damaged)."""
        try:
            return self.read_record()
        except OdmaugError:
            return None

    # -- files ---------------------------------------------------------------------------------
    def foreign_file(self) -> Optional[Path]:
        """A file or folder in the output folder that synthesis does not write (None: there is none).

        Synthesis writes ``synthesis.json``, ``manifest*.csv``, ``grading.csv``, ``grid.png``,
        ``<grade>/<seed>.png``, hidden ``.tmp`` files and its lock; anything else means ``--out`` points at a
        real dataset or a run folder.
        """
        if not self.root.is_dir():
            return None
        for entry in sorted(self.root.iterdir()):
            name = entry.name
            if entry.is_dir() and name.isdigit() and str(int(name)) == name:
                stray = next((f for f in sorted(entry.iterdir()) if not (_PNG_NAME.match(f.name) and f.is_file())
                              and not (f.name.startswith(".") and f.name.endswith(".tmp"))), None)
                if stray is not None:
                    return stray
            elif not (entry.is_file() and (name in _OWN_FILES or _OWN_FILE.match(name))):
                return entry
        return None

    def scan(self) -> Scan:
        """One listing of ``<out>/<grade>/``: final PNG names and leftover temporary files."""
        out = Scan()
        if not self.root.is_dir():
            return out
        with os.scandir(self.root) as top:
            entries = list(top)
        for entry in entries:
            if entry.is_file() and entry.name.startswith(".") and entry.name.endswith(".tmp"):
                out.temporary.append(Path(entry.path))
            if not (entry.is_dir() and entry.name.isdigit() and str(int(entry.name)) == entry.name):
                continue
            grade = int(entry.name)
            with os.scandir(entry.path) as files:
                for f in files:
                    if f.name.startswith(".") and f.name.endswith(".tmp"):
                        out.temporary.append(Path(f.path))
                    elif (m := _PNG_NAME.match(f.name)) and grade < self.num_classes:
                        out.images[Item(grade, int(m.group(1)))] = Path(f.path)
        return out

    def remove_temporary(self, scan: Scan) -> None:
        """Delete temporary files left by a killed run (only call when no writer is running)."""
        for path in scan.temporary:
            path.unlink(missing_ok=True)
        scan.temporary.clear()

    def valid_items(self, scan: Scan) -> set[Item]:
        """The scanned images that decode fully at the right size (one decode per file)."""
        return {item for item, path in scan.images.items() if is_valid_png(path, self.image_size, self.mode)}

    def remove_invalid(self, scan: Scan, valid: set[Item]) -> int:
        """Delete scanned images that are not in ``valid`` (damaged files); return how many."""
        bad = [path for item, path in scan.images.items() if item not in valid]
        for path in bad:
            path.unlink(missing_ok=True)
        return len(bad)

    def write_png(self, item: Item, image: np.ndarray) -> Path:
        """Write one image atomically to ``<out>/<grade>/<seed>.png``: uint8 [H, W, 3] (RGB),
        uint8 [H, W, 1] (8-bit grayscale) or uint16 [H, W, 1] (16-bit grayscale)."""
        target = self.path(item)
        with atomic_path(target) as tmp:
            png_image(image).save(tmp, format="PNG")
        return target

    # -- manifest ------------------------------------------------------------------------------
    def manifest_frame(
        self, items: Iterable[Item], record: dict[str, Any], extra: Optional[dict[str, dict[Item, Any]]] = None
    ) -> pd.DataFrame:
        """One manifest row per item (sorted by grade, then seed), paths absolute."""
        items = sorted(items)
        ident = record["identity"]
        frame = pd.DataFrame(
            {
                "path": [str(self.path(i).resolve()) for i in items],
                "label": [i.grade for i in items],
                "split": "train",
                "group": None,
                "source": "synthetic",
                "generator_run": record.get("generator_run"),
                "checkpoint_id": ident["checkpoint_id"],
                "seed": [i.seed for i in items],
                "sampler": ident["sampler"],
                "steps": ident["steps"],
                "guidance_scale": ident["guidance_scale"],
                "eta": ident["eta"],
            },
            columns=MANIFEST_COLUMNS,
        )
        for column, values in (extra or {}).items():
            frame[column] = [values.get(i) for i in items]
        return frame

    def write_manifest(self, frame: pd.DataFrame, name: str = MANIFEST_FILE) -> Path:
        """Write a manifest CSV atomically (paths relative to the folder)."""
        from odmaug.data import write_manifest

        return write_manifest(frame, self.root / name)
