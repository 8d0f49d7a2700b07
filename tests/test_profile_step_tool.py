"""tools/profile_step.py still drives the trainer: one profiled smoke step gives a complete record."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_profile_step_records_every_phase_and_the_top_operators():
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "tools" / "profile_step.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    record = tool.profile_form(ROOT / "recipes" / "smoke.yaml", ["train.precision=fp32"], warmup=1, steps=1, top=5)
    assert set(record["phase_ms_per_step"]) == set(tool.PHASES)
    assert abs(sum(record["phase_share"].values()) - 1) < 1e-3 and record["phase_ms_per_step"]["backward"] > 0
    assert len(record["top_ops"]) == 5 and record["ordinal_active"] and record["precision"] == "fp32"
    assert abs(sum(record["kind_share"].values()) - 1) < 1e-3
