"""odmaug.digest: the one digest module, checked against hashlib."""

import hashlib
import os

import pandas as pd
import pytest
import torch

from odmaug.digest import bytes_digest, file_digest, files_digest, json_digest, rows_digest, stage_key, tensors_digest
from odmaug.errors import OdmaugError


class _Table:
    def __init__(self, frame):
        self.frame = frame


def test_file_digest_matches_hashlib_and_sees_changes(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * (3 << 20) + b"tail")
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_digest(path, 12) == file_digest(path)[:12]
    path.write_bytes(b"changed")
    os.utime(path, ns=(1, 1))  # a new mtime and size: the memo must not answer
    assert file_digest(path) == hashlib.sha256(b"changed").hexdigest()
    assert bytes_digest(b"changed") == file_digest(path) and bytes_digest(b"changed", 12) == file_digest(path, 12)


def test_file_digest_checks_a_publishers_md5(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"published")
    assert file_digest(path, algorithm="md5") == hashlib.md5(b"published").hexdigest()
    assert file_digest(path) == hashlib.sha256(b"published").hexdigest()  # the memo keeps them apart


def test_file_digest_missing_is_one_error(tmp_path):
    with pytest.raises(OdmaugError, match="file not found"):
        file_digest(tmp_path / "none")


def test_files_digest_counts_names_and_contents(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"1")
    assert files_digest([a]) != files_digest([b])  # same bytes, other name
    assert files_digest([a, b]) != files_digest([b, a])


def test_json_digest_ignores_key_order():
    assert json_digest({"a": 1, "b": [1, 2]}) == json_digest({"b": [1, 2], "a": 1})
    assert json_digest({"a": 1}) == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert json_digest({"a": 1}) != json_digest({"a": 2})


def test_stage_key_follows_settings_tables_and_seed():
    frame = pd.DataFrame({"path": ["x.png", "y.png"], "label": [0, 4], "split": ["train", "train"]})
    table = _Table(frame)
    key = stage_key({"lr": 1e-3}, [table], seed=0)
    assert key == stage_key({"lr": 1e-3}, [_Table(frame.copy())], seed=0)
    assert key != stage_key({"lr": 1e-3}, [table], seed=1)
    assert key != stage_key({"lr": 2e-3}, [table], seed=0)
    relabelled = frame.assign(label=[0, 3])
    assert key != stage_key({"lr": 1e-3}, [_Table(relabelled)], seed=0)
    assert key != stage_key({"lr": 1e-3}, [table, None], seed=0)
    assert rows_digest(frame, ["path"]) != rows_digest(frame.iloc[::-1], ["path"])


def test_tensors_digest_follows_names_values_and_dtype():
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    digest = tensors_digest(weights, 16)
    assert len(digest) == 16
    assert digest == tensors_digest({k: v.clone() for k, v in weights.items()}, 16)
    assert digest == tensors_digest(list(weights.items()), 16)  # (name, tensor) pairs too
    changed = {**weights, "w": weights["w"].clone()}
    changed["w"][1, 2] += 1
    assert tensors_digest(changed, 16) != digest
    assert tensors_digest({"v": weights["w"], "b": weights["b"]}, 16) != digest  # a name counts
    # the same bytes read as another dtype are other weights
    zeros = torch.zeros(4, dtype=torch.float32)
    assert tensors_digest({"z": zeros}) != tensors_digest({"z": zeros.view(torch.int32)})
    assert tensors_digest({"z": zeros}) != tensors_digest({"z": zeros.reshape(2, 2)})  # and the shape
