from pathlib import Path

from typer.testing import CliRunner

from odmaug.cli import app

runner = CliRunner()


def test_data_info_quickstart_prints_real_counts_and_grid(tmp_path, retinamnist_dir):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "info", "--recipe", str(recipe), "--grid", str(grid), "--data-dir", str(retinamnist_dir)])
    assert result.exit_code == 0, result.output
    train_row = next(line for line in result.output.splitlines() if "train" in line)
    for count in ("486", "128", "206", "194", "66", "1080"):
        assert count in train_row
    assert "7.4" in train_row  # imbalance ratio 486 / 66
    assert grid.is_file() and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_info_synthetic_source(tmp_path, smoke_recipe_path):
    result = runner.invoke(app, ["data", "info", "--recipe", str(smoke_recipe_path)])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and "test" in result.output


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, smoke_recipe_path):
    grid = tmp_path / "grid.png"
    result = runner.invoke(app, ["data", "info", "--recipe", str(smoke_recipe_path), "--set", "data.bogus=1", "--grid", str(grid)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: --set data.bogus=1: unknown key 'bogus' in section 'data'"]
    assert not grid.exists()
    result = runner.invoke(app, ["data", "info", "--source", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "image folder not found" in result.output
    assert "Traceback" not in result.output
