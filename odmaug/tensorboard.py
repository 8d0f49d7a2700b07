"""TensorBoard event files beside ``log.jsonl`` (``--log tensorboard``; optional extra ``odmaug[tensorboard]``).

``log.jsonl`` stays the source of truth: :meth:`odmaug.runs.Run.log` and the classifier's epoch
record call :func:`mirror` with the event they just wrote, and when a command turned TensorBoard on
(:func:`use`) the event's figures go to ``<folder>/tensorboard/`` through torch's
``SummaryWriter`` (the standard writer of TensorBoard's event format):

======================  ===========================================================================
event                   written as
======================  ===========================================================================
``train``               ``train/l_dm``, ``train/l_ord``, ``train/loss``, ``train/lr``,
                        ``train/images_per_second`` at the generator step
``sample_grid``         image ``samples/ema_grid`` (the EMA sample grid PNG) at the step
``classifier_epoch``    ``classifier/train_loss``, ``classifier/val_loss``, ``classifier/val_qwk``,
                        ``classifier/val_accuracy``, ``classifier/lr`` at the epoch
======================  ===========================================================================

Only the process that writes a folder's ``log.jsonl`` (or trains that classifier) calls it, so each
event is written once.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any, Optional

from odmaug.errors import OdmaugError

LOGGERS = ("jsonl", "tensorboard")
"""``--log`` values: ``jsonl`` (always written) and ``tensorboard`` (in addition)."""

SCALARS = {
    "train": ("step", {"l_dm": "train/l_dm", "l_ord": "train/l_ord", "loss": "train/loss", "lr": "train/lr",
                       "img_s": "train/images_per_second"}),
    "classifier_epoch": ("epoch", {"train_loss": "classifier/train_loss", "val_loss": "classifier/val_loss",
                                   "val_qwk": "classifier/val_qwk", "val_accuracy": "classifier/val_accuracy",
                                   "lr": "classifier/lr"}),
}
"""Per event: the field that is the x axis, and field -> scalar tag."""

_enabled = False
_writers: dict[str, Any] = {}


def use(logger: Optional[str]) -> None:
    """Turn TensorBoard on for this process (``tensorboard``) or leave it off (None, ``jsonl``).

    Raises:
        OdmaugError: another value, or ``tensorboard`` without the package installed.
    """
    global _enabled
    if logger not in (None, *LOGGERS):
        raise OdmaugError(f"--log must be one of {', '.join(LOGGERS)} (got {logger!r})")
    if logger == "tensorboard":
        try:
            import tensorboard  # noqa: F401  torch's SummaryWriter needs it
        except ImportError:
            raise OdmaugError("--log tensorboard needs the tensorboard package: pip install 'odmaug[tensorboard]'") from None
    _enabled = logger == "tensorboard"


def enabled() -> bool:
    return _enabled


def mirror(folder: str | Path, event: str, record: dict[str, Any]) -> None:
    """Write ``record`` of ``event`` (as logged in ``folder``) to ``folder/tensorboard`` when on."""
    if not _enabled or (event not in SCALARS and event != "sample_grid"):
        return
    writer = _writer(Path(folder))
    if event == "sample_grid":
        _image(writer, Path(folder) / record["path"], int(record["step"]))
    else:
        axis, tags = SCALARS[event]
        for field, tag in tags.items():
            if record.get(field) is not None:
                writer.add_scalar(tag, float(record[field]), int(record[axis]))
    writer.flush()  # a reader (or a crash) sees every event written so far


def _writer(folder: Path):
    from torch.utils.tensorboard import SummaryWriter

    key = str(folder.resolve())
    if not _writers:
        atexit.register(close_all)
    if key not in _writers:
        _writers[key] = SummaryWriter(log_dir=str(folder / "tensorboard"))
    return _writers[key]


def _image(writer, path: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB"))  # [H, W, 3] uint8
    writer.add_image("samples/ema_grid", pixels, step, dataformats="HWC")


def close_all() -> None:
    """Close every writer (end of a command)."""
    for writer in _writers.values():
        writer.close()
    _writers.clear()
