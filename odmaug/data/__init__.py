"""Datasets: one table interface over RetinaMNIST, image folders, CSV manifests and a synthetic set."""

from odmaug.data.images import GradeDataset, load_uint8, prepare, to_model_range, to_uint8
from odmaug.data.sources import load_table, table_from_spec
from odmaug.data.table import ImageTable, read_image, write_manifest

__all__ = [
    "GradeDataset",
    "ImageTable",
    "load_table",
    "load_uint8",
    "prepare",
    "read_image",
    "table_from_spec",
    "to_model_range",
    "to_uint8",
    "write_manifest",
]
