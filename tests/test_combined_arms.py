"""Image arms combined with a remedy (issue 28): ``<arm>+<remedy>`` (``odm+corn``,
``odm+balanced-sampler``) keeps its image arm's table, generator and synthetic images (the same
store folders) and changes only the classifier's training options."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

import odmaug.classify.step as step_module
from odmaug.benchmark.arms import ARMS
from odmaug.benchmark.arm_specs import check_arm_spec, generator_recipe, parse_arm
from odmaug.benchmark.externals import load_externals
from odmaug.benchmark.datasets import training_table
from odmaug.benchmark.remedies import arm_recipe
from odmaug.benchmark.stage import Splits
from odmaug.benchmark.store import classifier_folder
from odmaug.classify.datasets import training_splits
from odmaug.classify.train import train_classifier
from odmaug.cli import app
from odmaug.data import ImageTable
from odmaug.errors import OdmaugError
from test_classify_train import make_recipe, write_squares

IMAGE_ARMS = ["dm", "odm", "dm-translate", "odm-translate", "external:sg=/data/sg", "oversample"]
REMEDIES = [kind.name for kind in ARMS.values() if kind.training]


@pytest.mark.parametrize("base", IMAGE_ARMS)
@pytest.mark.parametrize("remedy", REMEDIES)
def test_combination_is_its_image_arm_with_the_remedys_options(base, remedy):
    spec = f"{base}+{remedy}"
    check_arm_spec(spec)
    arm, image, cure = parse_arm(spec), parse_arm(base), parse_arm(remedy)
    assert arm.kind.table is image.kind.table and arm.kind.generator is image.kind.generator
    assert arm.kind.images is image.kind.images and arm.kind.synthesis == image.kind.synthesis
    assert arm.synthetic_name == image.synthetic_name and arm.kind.generated_name == image.kind.generated_name
    assert arm.argument == image.argument and arm.kind.training == cure.kind.training
    assert arm.label == f"{image.label}+{remedy}" and ":" not in arm.file_label
    recipe = make_recipe("x.csv")
    assert arm_recipe(recipe, arm).to_dict() == arm_recipe(recipe, cure).to_dict()  # only the classifier section
    if image.kind.generator is not None:  # the same generator recipe, hence the same generator store folder
        assert generator_recipe(recipe, spec).to_dict() == generator_recipe(recipe, base).to_dict()


def test_external_path_may_hold_a_plus():
    arm = parse_arm("external:sg=/data/a+b+corn")
    assert arm.argument == "sg=/data/a+b" and arm.label == "external:sg+corn" and arm.kind.training == (("head", "corn"),)
    assert parse_arm("external:sg=/data/a+b").argument == "sg=/data/a+b"  # no remedy suffix


@pytest.mark.parametrize("spec", ["real+corn", "corn+focal", "foo+corn", "odm+corn+focal"])
def test_combinations_that_cannot_be_made_are_refused(spec):
    with pytest.raises(ValueError, match=spec.replace("+", r"\+")):
        check_arm_spec(spec)
    with pytest.raises(OdmaugError):
        parse_arm(spec)


def test_image_arm_and_combination_share_external_images(tmp_path):
    (tmp_path / "ext").mkdir(), (tmp_path / "other").mkdir()
    manifest = write_squares(tmp_path / "ext", per_split=(("train", 2),))
    recipe = make_recipe(manifest)
    arms = [parse_arm(f"external:sg={manifest}"), parse_arm(f"external:sg={manifest}+corn")]
    tables = load_externals(arms, recipe.data)
    assert list(tables) == ["sg"] and len(tables["sg"]) == 10
    other = write_squares(tmp_path / "other", per_split=(("train", 1),))
    with pytest.raises(OdmaugError, match="the name 'sg' is taken"):
        load_externals([arms[0], parse_arm(f"external:sg={other}+corn")], recipe.data)


def test_classifier_store_keys_differ_from_the_image_arms(tmp_path):
    recipe = make_recipe("x.csv")
    table = ImageTable(pd.DataFrame({"path": ["a.png"], "label": [0], "split": ["train"], "source": ["real"]}), 5, "t")
    names = {spec: classifier_folder(tmp_path, parse_arm(spec).file_label, arm_recipe(recipe, parse_arm(spec)),
                                     (table, table, table), 0).name
             for spec in ["odm", "odm+corn", "odm+balanced-sampler", "corn", "balanced-sampler"]}
    assert len(set(names.values())) == len(names)


# ------------------------------------------------------------------------ training: one change each


class _Recorder:
    def __init__(self, monkeypatch):
        self.batches, self.criteria, self.outputs = [], [], []
        original = step_module.Stepper.step

        def step(stepper, images, labels, generator, smoothing=None):
            self.batches.append(labels.tolist())
            self.criteria.append(stepper.criterion)
            self.outputs.append(stepper.meta.outputs)
            return original(stepper, images, labels, generator, smoothing)

        monkeypatch.setattr(step_module.Stepper, "step", step)


@pytest.fixture(scope="module")
def odm_setting(tmp_path_factory):
    manifest = write_squares(tmp_path_factory.mktemp("odm"), per_split=(("train", 6), ("val", 2), ("test", 2)))
    recipe = make_recipe(manifest, epochs=1, batch_size=8)
    train, val, test = training_splits(recipe)
    frame = train.frame
    scarce = frame["label"] >= 3
    kept = frame[~scarce | (frame.groupby("label").cumcount() < 2)].reset_index(drop=True)  # grades 3, 4: 2 images
    real = ImageTable(kept, 5, train.name, train.data_dir, **train.format_fields())
    made = frame[scarce].assign(source="synthetic").reset_index(drop=True)  # stands in for ODM's images
    synthetic = ImageTable(made, 5, "odm", train.data_dir, **train.format_fields())
    return recipe, Splits("squares", real, val, test), {"odm": synthetic}


def _train_arm(spec, odm_setting, tmp_path, monkeypatch):
    recipe, splits, synthetic = odm_setting
    own = arm_recipe(recipe, parse_arm(spec))
    table, counts = training_table(parse_arm(spec), splits, synthetic, own, seed=0)
    recorder = _Recorder(monkeypatch)
    train_classifier(own, table, splits.val, splits.test, tmp_path / spec, seed=0, device="cpu", show_progress=False)
    monkeypatch.undo()
    return recorder, table


def test_odm_combinations_train_on_odms_table(odm_setting, tmp_path, monkeypatch):
    odm, table = _train_arm("odm", odm_setting, tmp_path, monkeypatch)
    corn, corn_table = _train_arm("odm+corn", odm_setting, tmp_path, monkeypatch)
    balanced, balanced_table = _train_arm("odm+balanced-sampler", odm_setting, tmp_path, monkeypatch)
    assert (table.frame["source"] == "synthetic").any()
    assert corn_table.frame.equals(table.frame) and balanced_table.frame.equals(table.frame)
    # CORN: the same batches, another head and loss
    assert corn.batches == odm.batches and odm.criteria[0] is None and corn.criteria[0] is not None
    assert odm.outputs[0] == 5 and corn.outputs[0] == 4
    # balanced sampler: the same head, loss and epoch length, other batches
    assert len(balanced.batches) == len(odm.batches) and balanced.batches != odm.batches
    assert balanced.criteria[0] is None and balanced.outputs[0] == 5


def test_dry_run_plans_one_generator_for_odm_and_its_combinations(tmp_path, smoke_recipe_path):
    arms = ["real", "odm", "corn", "odm+corn", "odm+balanced-sampler"]
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"),
            "--set", f"benchmark.arms=[{', '.join(arms)}]", "--dry-run", "--no-estimate"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(1 for line in lines if line.startswith("│ generator")) == 1
    assert sum(1 for line in lines if line.startswith("│ synthesis")) == 1
    for arm in arms:
        assert f"{arm} seed 0" in result.output, result.output


def test_plan_refuses_a_combination_its_options_forbid(tmp_path, smoke_recipe_path):
    args = ["benchmark", "--recipe", str(smoke_recipe_path), "--runs-dir", str(tmp_path / "runs"),
            "--set", "benchmark.arms=[real, odm+focal]", "--set", "classifier.head=corn", "--dry-run", "--no-estimate"]
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == ("error: benchmark arm odm+focal: classifier: head: corn cannot be combined with loss: focal, "
                        "mixup_alpha or cutmix_alpha")


def test_an_unknown_remedy_is_named_as_a_remedy():
    with pytest.raises(ValueError, match=r"unknown remedy 'nothing' in arm 'odm\+nothing' \(remedies: class-weighted, "):
        check_arm_spec("odm+nothing")
