"""``SynthesisRequest(counts=...)``: every grade's amount in one call (the generator loaded once), the
same images as one call per grade, ``settings=None`` meaning the run's ``sample`` section, and the
one-line refusals of mixed amounts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from odmaug.augment import SynthesisRequest, run_synthesis
from odmaug.config import SampleConfig
from odmaug.errors import OdmaugError
from odmaug.runs import open_run

FAST = SampleConfig(sampler="ddim", steps=2, eta=0.0, guidance_scale=2.0)


def pngs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*.png"))}


def test_counts_per_grade_in_one_call_equal_one_call_per_grade(smoke_run, tmp_path, monkeypatch):
    from odmaug import diffusion

    loads = []
    real_load = diffusion.load_generator
    monkeypatch.setattr(diffusion, "load_generator", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    whole = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "whole", counts={3: 2, 4: 3}, settings=FAST),
                          device="cpu", show_progress=False)
    assert len(loads) == 1
    assert whole.requested == {3: 2, 4: 3} and whole.generated == 5 and whole.real_counts is None
    for grade, n in ((3, 2), (4, 3)):
        run_synthesis(SynthesisRequest(smoke_run, tmp_path / "apart", [grade], n, settings=FAST),
                      device="cpu", show_progress=False)
    assert pngs(tmp_path / "whole") == pngs(tmp_path / "apart")
    again = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "whole", counts={3: 2, 4: 3, 0: 0}, settings=FAST),
                          device="cpu", show_progress=False)
    assert again.generated == 0 and again.present == 5


def test_no_settings_means_the_runs_sample_section(smoke_run, tmp_path):
    summary = run_synthesis(SynthesisRequest(smoke_run, tmp_path / "out", counts={4: 1}, settings=None),
                            device="cpu", show_progress=False)
    identity = json.loads((summary.out_dir / "synthesis.json").read_text())["identity"]
    expected = open_run(smoke_run).recipe().sample.pixel_settings()
    assert {k: identity[k] for k in expected if k != "precision"} == {k: v for k, v in expected.items()
                                                                     if k != "precision"}


@pytest.mark.parametrize("extra, message", [
    (dict(n_per_grade=2), "not both"),
    (dict(target_classes=[3]), "not both"),
    (dict(counts={9: 1}), "outside the grades"),
    (dict(counts={3: -1}), "0 or more"),
])
def test_mixed_or_bad_counts_are_one_line_errors(smoke_run, tmp_path, extra, message):
    kwargs = dict(counts={3: 1}, settings=FAST) | extra
    with pytest.raises(OdmaugError, match=message):
        run_synthesis(SynthesisRequest(smoke_run, tmp_path / "out", **kwargs), device="cpu", show_progress=False)
