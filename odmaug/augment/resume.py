"""A synthesis folder before and after generating, on rank 0: what is already there, and the manifest.

Before: refuse what cannot fit (from the counts, before any image is decoded), keep the valid
requested images, clear what a killed run left. After: rebuild the manifest from one listing of the
files, so it never names an image that is not there. Split from :mod:`odmaug.augment.synthesis`.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

import torch

from odmaug.augment.filter import GradeFilter, apply_filter
from odmaug.augment.lock import FolderLock
from odmaug.augment.plan import Item, Request
from odmaug.augment.space import check_disk_space, check_memory
from odmaug.augment.synthesis_folder import SynthesisFolder, is_valid_png, rank_manifest_name
from odmaug.distributed import Context, broadcast_object
from odmaug.errors import OdmaugError


def prepare_folder(folder: SynthesisFolder, record: dict, request: Request, force: bool,
                   context: Context, lock: Optional[FolderLock] = None) -> tuple[dict[str, Any], set[Item]]:
    """Rank 0 alone touches the folder's existing files, then tells every rank which requested
    images are already there (``state["present"]``); also returns rank 0's valid images (others: empty).
    ``lock`` (rank 0's) is taken first: a folder another run writes is refused before anything is read."""
    state: dict[str, Any] = {"error": None}
    valid: set[Item] = set()
    if context.is_main:
        try:
            if lock is not None:
                lock.acquire()
            # Decide everything before writing anything: a refusal leaves the folder untouched.
            replace = folder.needs_replacing(record, force)
            scan = folder.scan()
            # From the counts, before any image is decoded: a request that cannot fit is refused at once.
            listed = 0 if replace else sum(1 for item in scan.images if item in request)
            check_disk_space(folder.root, request.total - listed, folder.image_size)
            check_memory(request.total + (0 if replace else len(scan.images) - listed))
            valid = set() if replace else folder.valid_items(scan)
            present = {item for item in valid if item in request}
            check_disk_space(folder.root, request.total - len(present), folder.image_size)
            state["present"], state["removed"] = present, folder.prepare(record, force)
            if not replace:
                folder.remove_temporary(scan)  # left by a killed run
                folder.remove_invalid(scan, valid)  # damaged files: remade if requested, else dropped
        except OdmaugError as err:
            state = {"error": str(err)}
        except OSError as err:  # e.g. an unwritable --out: one line, and the other ranks stop too
            state = {"error": f"cannot use {folder.root}: {err.strerror or err}"}
    state = broadcast_object(state, context)
    if state["error"]:
        raise OdmaugError(state["error"])
    return state, valid


def finish_folder(folder: SynthesisFolder, record: dict, request: Request, valid: set[Item],
                  grade_filter: Optional[GradeFilter], device: torch.device, context: Context,
                  sources=None) -> dict[str, Any]:
    """Rank 0: rebuild the manifest from one listing of the folder (and apply the filter); with
    ``sources`` (:class:`odmaug.augment.from_real.SourcePools`) each row names its source image."""
    scan = folder.scan()
    # Every requested image, and every one validated at the start, must be there (walked, not listed).
    expected = itertools.chain(request.items(), (i for i in valid if i not in request))
    missing = (item for item in expected if item not in scan.images)
    first = next(missing, None)
    if first is not None:
        count = 1 + sum(1 for _ in missing)
        raise OdmaugError(f"{count} images vanished while writing, e.g. {folder.path(first)}; re-run")
    # Files neither validated at the start nor written now (another process?) are checked here.
    on_disk = [i for i, p in scan.images.items() if i in request or i in valid or is_valid_png(p, folder.image_size, folder.mode)]
    extra: dict[str, dict[Item, Any]] = {}
    filtered_out: dict[int, int] = {}
    if grade_filter is not None:
        on_disk, predicted, filtered_out = apply_filter(grade_filter, folder, on_disk, device)
        extra["predicted_grade"] = predicted
    extra.update({} if sources is None else sources.manifest_columns(on_disk))
    frame = folder.manifest_frame(on_disk, record, extra)
    folder.write_manifest(frame)
    for rank in range(context.world_size if context.enabled else 0):
        (folder.root / rank_manifest_name(rank)).unlink(missing_ok=True)
    per_grade = frame["label"].value_counts().sort_index()
    return {
        "error": None,
        "fields": {
            "manifest_rows": len(frame),
            "manifest_counts": {int(g): int(c) for g, c in per_grade.items()},
            "filtered_out": filtered_out,
        },
    }
