"""DICOM in: files written with pydicom's own writer and pydicom's bundled test files.

Expected pixels come from the DICOM standard's formulas (PS3.3 C.11.1 rescale, C.11.2.1.2.1 the
LINEAR window), computed here with numpy, not from the pydicom calls odmaug makes; lossless
compressed files must decode equal to their uncompressed originals.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pydicom = pytest.importorskip("pydicom")  # in the dev extra; skipped only in a bare install
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from odmaug.config import DataConfig  # noqa: E402
from odmaug.data import load_table, load_uint8, write_manifest  # noqa: E402
from odmaug.data.dicom import decode_dicom, patient_key  # noqa: E402
from odmaug.errors import OdmaugError  # noqa: E402

STORED = np.array([[0, 100, 200, 300], [400, 500, 600, 4095]] * 2, dtype=np.uint16)  # 12-bit levels


def write_dicom(path: Path, pixels: np.ndarray = STORED, patient: str = "P1", **tags) -> Path:
    """A single-frame 12-bit grayscale Secondary Capture file written by pydicom itself."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", patient
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, tags.pop("PhotometricInterpretation", "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..65535."""
    share = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    return np.rint(share * 65535).astype(np.int64)


def test_rescale_slope_and_intercept_then_the_stored_window(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=400)
    got = decode_dicom(path)
    assert got.shape == (4, 4, 1) and got.dtype == np.uint16
    modality = 2.0 * STORED - 100  # C.11.1: output units = slope * stored + intercept
    assert np.abs(got[:, :, 0].astype(np.int64) - linear_window(modality, 300, 400)).max() <= 1


def test_a_given_window_replaces_the_stored_one(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=400)
    got = decode_dicom(path, window=(500.0, 1000.0))
    expected = linear_window(2.0 * STORED - 100, 500, 1000)
    assert np.abs(got[:, :, 0].astype(np.int64) - expected).max() <= 1
    assert not np.array_equal(got, decode_dicom(path))


def test_without_any_window_the_image_spans_its_own_range(tmp_path):
    got = decode_dicom(write_dicom(tmp_path / "a.dcm"))[:, :, 0].astype(np.int64)
    expected = np.rint(STORED / 4095.0 * 65535)
    assert got.min() == 0 and got.max() == 65535 and np.abs(got - expected).max() <= 1


def test_monochrome1_is_inverted_so_bone_is_bright(tmp_path):
    tags = dict(RescaleSlope=1, RescaleIntercept=0, WindowCenter=2048, WindowWidth=4096)
    two = decode_dicom(write_dicom(tmp_path / "two.dcm", **tags)).astype(np.int64)
    one = decode_dicom(write_dicom(tmp_path / "one.dcm", PhotometricInterpretation="MONOCHROME1", **tags))
    assert np.array_equal(one.astype(np.int64), 65535 - two)


def test_a_compressed_transfer_syntax_decodes_as_its_uncompressed_original():
    plain = decode_dicom(get_testdata_file("MR_small.dcm"))
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):  # JPEG-LS (pylibjpeg), RLE (pydicom)
        assert np.array_equal(decode_dicom(get_testdata_file(name)), plain), name
    assert plain.shape == (64, 64, 1) and plain.dtype == np.uint16
    extended = decode_dicom(get_testdata_file("JPGExtended.dcm"))  # 12-bit JPEG Extended (pylibjpeg-libjpeg)
    assert extended.shape == (1024, 256, 1) and extended.max() == 65535


def test_ct_small_from_pydicom_is_rescaled_and_spans_its_range():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    got = decode_dicom(get_testdata_file("CT_small.dcm"))[:, :, 0].astype(np.float64)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)  # no stored window
    expected = (hu - hu.min()) / (hu.max() - hu.min()) * 65535
    assert np.abs(got - expected).max() <= 1


@pytest.mark.parametrize("name, words", [("rtdose.dcm", "multi-frame DICOM (15 frames)"),
                                          ("rtplan.dcm", "not an image")])
def test_multi_frame_and_non_image_objects_are_refused_naming_the_file(name, words):
    with pytest.raises(OdmaugError) as err:
        decode_dicom(get_testdata_file(name))
    assert words in str(err.value) and name in str(err.value) and "\n" not in str(err.value)


def test_a_folder_of_dicom_files_is_one_channel_16_bit_and_its_bad_file_is_one_cli_line(tmp_path):
    from typer.testing import CliRunner

    from odmaug.cli import app

    for grade in range(2):
        for i in range(3):
            write_dicom(tmp_path / "set" / str(grade) / f"{i}.dcm", STORED + 100 * grade + i)
    cfg = DataConfig(source="folder", path=str(tmp_path / "set"), num_classes=2, image_size=8, cache=False,
                     val_fraction=0.0, test_fraction=0.0)
    table = load_table(cfg)
    images = load_uint8(table, 8)
    assert table.pixel_format().channels == 1 and images.dtype.is_floating_point is False
    assert images.shape == (6, 1, 8, 8) and str(images.dtype) == "torch.uint16"
    levels = images.numpy().astype(np.int64)
    assert (levels % 257 != 0).mean() > 0.5  # most levels fall between 8-bit steps: 16 bits reach the network
    windowed = load_table(cfg.model_copy(update={"window": (300.0, 200.0)}))  # data.window reaches the decoder
    assert windowed.window == (300.0, 200.0) and not torch.equal(load_uint8(windowed, 8), images)

    (tmp_path / "set" / "1" / "volume.dcm").write_bytes(Path(get_testdata_file("rtdose.dcm")).read_bytes())
    every = ["--set", "data.val_fraction=0", "--set", "data.test_fraction=0"]  # the grid draws from all of them
    result = CliRunner().invoke(app, ["data", "info", "--source", str(tmp_path / "set"), "--grid", str(tmp_path / "g.png"),
                                      *every])
    assert result.exit_code == 2, result.output
    assert "volume.dcm: multi-frame DICOM" in result.output


def test_patient_id_groups_the_split_and_is_never_written(tmp_path):
    patients = [f"KNEE-{p:03d}" for p in range(8)]
    for p, patient in enumerate(patients):
        for side in ("left", "right"):
            grade = p % 2
            write_dicom(tmp_path / "set" / str(grade) / f"{p}_{side}.dcm", STORED, patient=patient)
    cfg = DataConfig(source="folder", path=str(tmp_path / "set"), num_classes=2, image_size=8, cache=False,
                     group_from="PatientID", val_fraction=0.25, test_fraction=0.25, min_split_images=0)
    table = load_table(cfg)
    frame = table.frame
    assert set(frame["group"]) == {patient_key(p) for p in patients}  # hashed, one per patient
    assert frame.groupby("group")["split"].nunique().max() == 1  # both knees of a patient in one split
    manifest = write_manifest(table, tmp_path / "runs" / "manifest.csv")
    text = manifest.read_text()
    assert not any(p in text for p in patients) and all(patient_key(p) in text for p in patients)
    assert pd.read_csv(manifest)["group"].nunique() == len(patients)


def test_group_from_needs_a_dicom_attribute_on_every_file(tmp_path):
    write_dicom(tmp_path / "set" / "0" / "a.dcm")
    write_dicom(tmp_path / "set" / "1" / "b.dcm")
    cfg = DataConfig(source="folder", path=str(tmp_path / "set"), num_classes=2, group_from="PatientName",
                     cache=False, val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(OdmaugError, match="PatientName: no such DICOM attribute in .*a.dcm"):
        load_table(cfg)
    with pytest.raises(OdmaugError, match="not a DICOM attribute keyword"):
        load_table(cfg.model_copy(update={"group_from": "PatientIdentity"}))
