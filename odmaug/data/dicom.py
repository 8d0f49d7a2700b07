"""DICOM images (``.dcm``): single-frame grayscale or colour, as a radiologist's viewer shows them.

Needs the optional extra ``odmaug[dicom]``: pydicom, and pylibjpeg with its libjpeg plugin for
JPEG, JPEG-LS and JPEG lossless transfer syntaxes (RLE and uncompressed ones need pydicom alone).

Grayscale (MONOCHROME1/2) pixels go through pydicom's own transforms, in the standard's order
(DICOM PS3.3 C.11, pydicom.pixels.apply_modality_lut and apply_voi_lut):

1. the modality LUT: Rescale Slope and Intercept (CT: stored values -> Hounsfield units), or a
   Modality LUT Sequence;
2. the VOI LUT: ``data.window`` (center, width) when given, else the file's first stored window
   (Window Center / Width) or VOI LUT Sequence; a file with neither is scaled by its own min..max;
3. the result is scaled onto 0..65535 (uint16): the window's output range when there is one;
4. MONOCHROME1 (low values white) is inverted, so bone is bright in every image.

Colour images (RGB, YBR: pydicom converts to RGB) keep their stored levels. Multi-frame objects
(CT/MR volumes, cine loops) and objects without pixels (reports, plans) are refused with one line
naming the file. Patient identifiers are never kept: :func:`dicom_group` hashes them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from odmaug.errors import OdmaugError

INSTALL = "pip install 'odmaug[dicom]'"


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise OdmaugError(f"reading DICOM (.dcm) files needs pydicom: {INSTALL}") from None
    return pydicom


def _read(path: str | Path, header_only: bool):
    """The dataset of ``path``; one error line naming the file when it is not DICOM."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except FileNotFoundError:
        raise OdmaugError(f"image not found: {path}") from None
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, KeyError, EOFError) as err:
        raise OdmaugError(f"corrupt or unreadable DICOM file: {path} ({err})") from None


def dicom_kind(path: str) -> tuple[bool, bool]:
    """(grayscale, deep) from the header: MONOCHROME1/2 is grayscale and deep (its windowed levels
    keep 16 bits); colour is deep when Bits Stored exceeds 8. Unreadable: (False, False)."""
    try:
        ds = _read(path, header_only=True)
    except OdmaugError:
        return False, False
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric.startswith("MONOCHROME"):
        return True, True
    return False, int(ds.get("BitsStored", 8) or 8) > 8


def decode_dicom(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """One single-frame DICOM image as uint16 [H, W, 1] (grayscale) or uint8/uint16 [H, W, 3].

    Args:
        path: the ``.dcm`` file.
        window: (center, width) in modality units (e.g. Hounsfield units) replacing the stored
            window; None: the file's own VOI (see the module docstring).

    Raises:
        OdmaugError: pydicom missing, not a DICOM file, no Pixel Data, more than one frame, or a
            compressed transfer syntax without its decoder; the message names the file.
    """
    ds = _read(path, header_only=False)
    if "PixelData" not in ds:
        what = ds.get("Modality") or ds.get("SOPClassUID", "unknown")
        raise OdmaugError(f"{path}: not an image (a DICOM object without Pixel Data: {what})")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise OdmaugError(f"{path}: multi-frame DICOM ({frames} frames); odmaug takes one image per file")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many kinds; each means "cannot decode"
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise OdmaugError(f"cannot decode the pixels of {path} ({name}: {str(err).splitlines()[0]}); "
                          f"compressed DICOM needs {INSTALL}") from None
    if str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
        return _gray(pixels, ds, window)[:, :, None]
    bits = int(ds.get("BitsStored", 8) or 8)
    if pixels.ndim == 2:  # palette colour left unexpanded is rare: show its indices as gray
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if bits <= 8:
        return pixels.astype(np.uint8)
    return np.rint(pixels.astype(np.float64) * (65535.0 / (2**bits - 1))).clip(0, 65535).astype(np.uint16)


def _gray(stored: np.ndarray, ds, window: tuple[float, float] | None) -> np.ndarray:
    """Modality LUT, VOI LUT, scaling onto 0..65535 and MONOCHROME1 inversion: uint16 [H, W]."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(stored, ds)
    if window is not None:
        ds = ds.copy()  # the caller's window replaces the stored ones, VOI LUT tables included
        for keyword in ("VOILUTSequence", "WindowCenter", "WindowWidth"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_voi:
        out = apply_voi_lut(values, ds, prefer_lut=window is None)
        # The VOI's output range: the values far below and above any window map onto its ends.
        low, high = (float(v) for v in apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=window is None))
    else:
        out, low, high = values, float(values.min()), float(values.max())
    out = np.asarray(out, dtype=np.float64)
    span = (high - low) or 1.0
    scaled = np.clip(np.rint((out - low) / span * 65535.0), 0, 65535).astype(np.uint16)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        scaled = np.uint16(65535) - scaled
    return scaled


def patient_key(value: object) -> str:
    """A patient identifier as its salted sha256 (16 hex characters): the same patient gives the
    same key, so grouped splits work, but the identifier itself is never written anywhere.

    A hash is a pseudonym, not anonymity: a short numeric ID can be found again by hashing every
    candidate, so run folders stay as confidential as the images themselves."""
    return hashlib.sha256(f"odmaug-patient:{value}".encode()).hexdigest()[:16]


def groups_from_tag(paths: list[str], keyword: str, origin: str) -> np.ndarray:
    """The hashed value of DICOM attribute ``keyword`` (e.g. ``PatientID``) per file, shape (N,):
    the patient groups of ``data.group_from``, as :func:`patient_key` pseudonyms.

    Raises:
        OdmaugError: pydicom missing, an unknown keyword, a file that is not DICOM or lacks the
            attribute (the message names up to three such files and their count).
    """
    _pydicom()
    from pydicom.datadict import tag_for_keyword

    if tag_for_keyword(keyword) is None:
        raise OdmaugError(f"data.group_from: '{keyword}' is not a DICOM attribute keyword (e.g. PatientID)")
    groups, missed = [], []
    for path in paths:
        ds = _read(path, header_only=True) if Path(path).suffix.lower() in (".dcm", ".dicom") else None
        value = None if ds is None else ds.get(keyword)
        if value is None or str(value).strip() == "":
            missed.append(path)
        groups.append(None if value is None else patient_key(str(value).strip()))
    if missed:
        shown = ", ".join(missed[:3]) + (f" and {len(missed) - 3} more" if len(missed) > 3 else "")
        raise OdmaugError(f"{origin}: data.group_from {keyword}: no such DICOM attribute in {shown}")
    return np.asarray(groups, dtype=object)
