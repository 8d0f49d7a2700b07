"""The data-source registry, and the :class:`ImageTable` of a recipe's ``data`` section or of a
path given on the command line.

``data.source`` names a :class:`DataSource` in :data:`DATA_SOURCES`. Registered:

* ``retinamnist``: MedMNIST's RetinaMNIST (5 DR grades) with its official splits (:mod:`odmaug.data.retinamnist`);
* ``synthetic``: the built-in offline ordinal set (:mod:`odmaug.data.synthetic`, ``data.synthetic``);
* ``folder``: ``data.path/<grade>/<image>`` (any format Pillow reads, or DICOM);
* ``manifest``: a CSV at ``data.path`` (:mod:`odmaug.data.manifest`).

A new source is a module returning an :class:`ImageTable` plus one ``DATA_SOURCES.add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from odmaug.config import DataConfig
from odmaug.data import retinamnist
from odmaug.data.checks import apply_pixel_settings
from odmaug.data.listing import folder_table
from odmaug.data.manifest import check_table, path_table, read_manifest, split_column
from odmaug.data.radiograph import RADIOGRAPH
from odmaug.data.synthetic import synthetic_labels
from odmaug.data.schemes import RETINAMNIST_SCHEME, SYNTHETIC_SCHEME
from odmaug.data.table import ImageTable
from odmaug.errors import OdmaugError
from odmaug.registry import Registry

__all__ = ["DATA_SOURCES", "DataSource", "counts_by_split", "folder_table", "load_table", "read_manifest",
           "retinamnist_table", "synthetic_table", "table_from_spec"]


@dataclass(frozen=True)
class DataSource:
    """One registered data source.

    Attributes:
        load: ``load(cfg, check_images)`` -> every split of the source as one table (crop and
            pixel settings applied, every grade present in ``train``, images checked if asked).
        named: a built-in set that a command-line spec can name as it is (``retinamnist:test``);
            False for sources read from ``data.path`` (a spec gives the path itself).
        needs_path: ``data.path`` must be set.
    """

    load: Callable[[DataConfig, bool], ImageTable]
    named: bool = False
    needs_path: bool = False


DATA_SOURCES: Registry[DataSource] = Registry("data source")


def retinamnist_table(data_dir: str | None = None) -> ImageTable:
    """RetinaMNIST with its official train/val/test splits."""
    frames = []
    for split in retinamnist.SPLITS:
        _, labels = retinamnist.load_split(split, data_dir)
        paths = [f"{RETINAMNIST_SCHEME}{split}/{i}" for i in range(len(labels))]
        frames.append(pd.DataFrame({"path": paths, "label": labels, "split": split}))
    return ImageTable(pd.concat(frames, ignore_index=True), 5, "retinamnist", data_dir)


def synthetic_table(cfg: DataConfig) -> ImageTable:
    """The built-in synthetic ordinal dataset, split deterministically."""
    syn = cfg.synthetic
    labels = synthetic_labels(syn.counts)
    kind = f"{RADIOGRAPH}/" if syn.kind == RADIOGRAPH else ""  # fundus references stay as they always were
    paths = [f"{SYNTHETIC_SCHEME}{kind}{syn.native_size}/{syn.seed}/{i}/{g}" for i, g in enumerate(labels)]
    frame = pd.DataFrame({"path": paths, "label": labels})
    frame["split"] = split_column(labels, None, cfg)
    return ImageTable(frame, cfg.num_classes, "synthetic" if kind == "" else "synthetic-radiograph")


def _ready(table: ImageTable, cfg: DataConfig, origin: str) -> ImageTable:
    """The recipe's crop and pixel settings on ``table``; every grade must have training images."""
    table.crop = cfg.crop
    apply_pixel_settings(table, cfg, origin)
    table.split("train").require_every_grade()
    return table


def _load_retinamnist(cfg: DataConfig, check_images: bool) -> ImageTable:
    if cfg.num_classes != 5:
        raise OdmaugError("RetinaMNIST has 5 grades: set data.num_classes to 5")
    table = retinamnist_table(cfg.data_dir)
    return _ready(table, cfg, table.name)


def _load_synthetic(cfg: DataConfig, check_images: bool) -> ImageTable:
    table = synthetic_table(cfg)
    return _ready(table, cfg, table.name)


def _load_path(cfg: DataConfig, check_images: bool) -> ImageTable:
    table, drawn = path_table(Path(cfg.path), cfg, draw=True)
    _ready(table, cfg, str(cfg.path))
    check_table(table, cfg, str(cfg.path), drawn, check_images)
    return table


DATA_SOURCES.add("retinamnist", DataSource(_load_retinamnist, named=True), "RetinaMNIST (MedMNIST), 5 DR grades, official splits")
DATA_SOURCES.add("synthetic", DataSource(_load_synthetic, named=True), "built-in offline ordinal set (data.synthetic)")
DATA_SOURCES.add("folder", DataSource(_load_path, needs_path=True), "data.path/<grade>/<image> (Pillow formats, DICOM)")
DATA_SOURCES.add("manifest", DataSource(_load_path, needs_path=True), "CSV manifest at data.path (path,label[,split,group])")


def load_table(cfg: DataConfig, check_images: bool = True) -> ImageTable:
    """Every split of the recipe's data source as one table; with ``check_images`` (off only for
    counting, ``data info``) every image of a folder or manifest is checked (:mod:`odmaug.data.verify`).

    Raises:
        OdmaugError: an unknown source; missing or unreadable paths or images, bad labels, escaping
            manifest paths, a grade with no images in the training split, a set too small for the
            asked val/test splits.
    """
    source = DATA_SOURCES.get(cfg.source)
    if source.needs_path and not cfg.path:
        raise OdmaugError(f"data.path is required when data.source is '{cfg.source}'")
    return source.load(cfg, check_images)


def split_spec(spec: str) -> tuple[str, str | None]:
    """``retinamnist:test`` -> (``retinamnist``, ``test``); a spec without a split suffix -> (spec, None)."""
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and tail in ("train", "val", "test") and head else (spec, None)


def table_from_spec(spec: str, cfg: DataConfig, draw_splits: bool | str = False, check_images: bool = True) -> ImageTable:
    """A table from a command-line spec: ``recipe``, a folder, a ``.csv`` manifest or a named
    source (``retinamnist``, ``synthetic``), optionally ``spec:split`` to keep one split (e.g.
    ``retinamnist:test``).

    A folder or manifest without a split column gets the same split as a recipe's (stratified,
    grouped by the ``group`` column or ``data.group_pattern``) when ``draw_splits`` is set or the
    spec names a split; otherwise all its rows are ``train``: a set used whole (generated images,
    an evaluation folder, synthetic pools). ``draw_splits="if-possible"`` (``data info``) keeps all
    rows ``train`` instead of failing when the set is too small to split. The recipe's
    ``data.crop`` and decode cache apply; ``check_images`` as in :func:`load_table` (the kept split only).

    Raises:
        OdmaugError: as :func:`load_table`; a named split that is empty.
    """
    spec, split = split_spec(spec)
    named = spec in DATA_SOURCES and DATA_SOURCES.get(spec).named
    if spec == "recipe":
        table = load_table(cfg, check_images)
    elif named:
        table = load_table(cfg.model_copy(update={"source": spec, "num_classes": 5 if spec == "retinamnist" else cfg.num_classes}))
    else:
        table, drawn = path_table(Path(spec), cfg, draw=True if split else draw_splits)
        apply_pixel_settings(table, cfg, spec)
    if split:
        table = table.split(split)
        if len(table) == 0:
            raise OdmaugError(f"{spec}: split '{split}' is empty")
    if spec != "recipe" and not named:
        check_table(table, cfg, spec, drawn, check_images)
    return table


def counts_by_split(table: ImageTable) -> dict[str, np.ndarray]:
    """Images per grade for each split present."""
    return {s: table.split(s).counts() for s in table.splits()}
