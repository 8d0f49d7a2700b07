"""The Typer application and the options every command shares.

Commands live in ``odmaug/cli/cmd_*.py`` modules; each registers itself on :data:`app` (or on a
sub-app) when imported, and ``odmaug.cli`` imports them all. Library errors (``OdmaugError``)
become one ``error: ...`` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import click
import typer
from typer.core import TyperGroup

from odmaug.config import Recipe, load_recipe
from odmaug.errors import OdmaugError


class OdmaugGroup(TyperGroup):
    """A command group that turns user errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OdmaugError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: files written so far are complete; re-run to resume", err=True)
            raise typer.Exit(code=130) from None


app = typer.Typer(
    cls=OdmaugGroup,
    name="odmaug",
    help="Ordinal Diffusion Model augmentation for medical severity classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(cls=OdmaugGroup, help="Look at datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        from odmaug import __version__

        typer.echo(f"odmaug {__version__}")
        raise typer.Exit()


RecipeOption = typer.Option(None, "--recipe", "-r", help="Recipe YAML (default: built-in defaults).")
SetOption = typer.Option(None, "--set", "-s", help="Override a recipe value, e.g. --set train.lr=2e-4 (repeatable).")
DataDirOption = typer.Option(None, "--data-dir", help="Folder holding retinamnist.npz (default $ODMAUG_DATA_DIR).")
RunsDirOption = typer.Option(None, "--runs-dir", help="Where run folders go (default $ODMAUG_RUNS_DIR or ./runs).")
DeviceOption = typer.Option(None, "--device", help="auto, cpu, cuda or mps (default: the recipe's, usually auto).")
SeedOption = typer.Option(None, "--seed", help="Seed for every random draw (default: the recipe's).")


def recipe_from_options(
    recipe: Optional[Path],
    overrides: Optional[List[str]],
    data_dir: Optional[Path] = None,
    device: Optional[str] = None,
    seed: Optional[int] = None,
) -> Recipe:
    """Load a recipe and apply ``--set`` overrides and the shared options."""
    sets = list(overrides or [])
    if data_dir is not None:
        sets.append(f"data.data_dir={data_dir}")
    if device is not None:
        sets.append(f"device={device}")
    if seed is not None:
        sets.append(f"seed={seed}")
    return load_recipe(recipe, sets)
