import re
from pathlib import Path

import pytest

from odmaug.config import Recipe, dump_recipe, load_recipe, recipe_from_dict
from odmaug.errors import OdmaugError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_loads(name):
    recipe = load_recipe(REPO / "recipes" / name)
    assert isinstance(recipe, Recipe)
    assert recipe.name


def test_unknown_key_names_key_section_and_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  lr: 1.0e-4\n  learning_rate: 3\n")
    with pytest.raises(OdmaugError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "learning_rate" in message and "'train'" in message and str(path) in message
    assert "\n" not in message


def test_unknown_nested_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("diffusion:\n  ordinal:\n    gama: 1\n")
    with pytest.raises(OdmaugError, match="unknown key 'gama' in section 'diffusion.ordinal'"):
        load_recipe(path)


def test_unknown_section(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("trian:\n  lr: 1\n")
    with pytest.raises(OdmaugError, match="unknown key 'trian' in section 'top level'"):
        load_recipe(path)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("train:\n  lr: fast\n", "train.lr"),
        ("train:\n  batch_size: 0\n", "train.batch_size"),
        ("data:\n  image_size: 4\n", "data.image_size"),
        ("diffusion:\n  ordinal:\n    distance: cosine\n", "diffusion.ordinal.distance"),
        ("data:\n  source: folder\n", "data.path is required"),
        ("data:\n  source: dicomweb\n", "data.source: unknown data source 'dicomweb' (known: retinamnist, synthetic, folder, manifest)"),
        ("sample:\n  sampler: euler\n", "sample.sampler: unknown sampler 'euler' (known: ddim, ddpm, dpmpp-2m, unipc)"),
        ("generator:\n  name: dit\n", "generator.name: unknown generator 'dit' (known: unet)"),
        ("data:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "below 1"),
    ],
)
def test_wrong_types_and_ranges_are_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    from odmaug.commands.names import check_names

    with pytest.raises(OdmaugError) as err:  # types at load, registered names at the command boundary
        check_names(load_recipe(path))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(OdmaugError, match="not valid YAML"):
        load_recipe(path)


def test_missing_recipe(tmp_path):
    with pytest.raises(OdmaugError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_overrides_are_typed_and_validated(smoke_recipe_path, tmp_path):
    recipe = load_recipe(smoke_recipe_path, ["train.lr=2e-4", "diffusion.ordinal.gamma=0", "data.crop_box=[0,0,10,10]"])
    assert recipe.train.lr == pytest.approx(2e-4)
    assert recipe.diffusion.ordinal.gamma == 0.0
    assert recipe.data.crop_box == (0, 0, 10, 10)
    with pytest.raises(OdmaugError, match="^--set train.lrr=1: unknown key 'lrr'"):
        load_recipe(smoke_recipe_path, ["train.lrr=1"])
    # the error names what the user typed when an override is at fault, else the file
    with pytest.raises(OdmaugError, match=r"^--set train.lr=-1: train.lr: .*greater than 0"):
        load_recipe(smoke_recipe_path, ["train.lr=2e-4", "train.lr=-1"])
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("train:\n  lr: -1\n")
    with pytest.raises(OdmaugError, match=f"^{re.escape(str(bad_file))}: train.lr"):
        load_recipe(bad_file, ["train.steps=3"])
    with pytest.raises(OdmaugError, match="section.key=value"):
        load_recipe(smoke_recipe_path, ["train.lr"])


def test_name_defaults_to_file_stem_and_round_trips(tmp_path):
    path = tmp_path / "myexp.yaml"
    path.write_text("seed: 3\n")
    recipe = load_recipe(path)
    assert recipe.name == "myexp" and recipe.seed == 3
    again = tmp_path / "again.yaml"
    again.write_text(dump_recipe(recipe))
    assert load_recipe(again) == recipe


def test_name_must_be_a_folder_name():
    with pytest.raises(OdmaugError, match="name"):
        recipe_from_dict({"name": "../escape"})


@pytest.mark.parametrize("override, expected", [
    # the override itself is at fault
    ("data.synthetic.counts=[40, -1, 20, 16, 12]", "--set data.synthetic.counts=[40, -1, 20, 16, 12]: data.synthetic.counts.1"),
    ("generator.channel_mult=[1, 0]", "--set generator.channel_mult=[1, 0]: generator.channel_mult.1"),
    ("generator.channel_mult=[]", "--set generator.channel_mult=[]: generator.channel_mult: List should have at least 1"),
    ("generator.attention_resolutions=[-8]", "--set generator.attention_resolutions=[-8]: generator.attention_resolutions.0"),
    ("train.betas=[0.9, 2]", "--set train.betas=[0.9, 2]: train.betas.1: Input should be less than 1"),
    ("seed=-1", "--set seed=-1: seed: Input should be greater than or equal to 0"),
    ("benchmark.seeds=[0, -1]", "--set benchmark.seeds=[0, -1]: benchmark.seeds.1"),
    ("data.split_seed=-3", "--set data.split_seed=-3: data.split_seed"),
    ("nosection.x=1", "--set nosection.x=1: unknown key 'nosection' in section 'top level'"),
    ("train.foo.bar=1", "--set train.foo.bar=1: unknown key 'foo' in section 'train'"),
    ("train. lr=-1", "--set train. lr=-1: train.lr: Input should be greater than 0"),
    # a check over the whole section: the file and the override are both named
    ("data.val_fraction=0.9", "{recipe} with --set data.val_fraction=0.9: data: data.val_fraction + data.test_fraction"),
])
def test_bad_overrides_are_refused_and_blamed(smoke_recipe_path, override, expected):
    expected = expected.format(recipe=smoke_recipe_path)
    with pytest.raises(OdmaugError) as caught:
        load_recipe(smoke_recipe_path, [override])
    assert str(caught.value).startswith(expected), str(caught.value)
