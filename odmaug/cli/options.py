"""The options several commands share, declared once.

Each is an ``Annotated`` type (Typer reads its option names and help from it). A command takes a
group of them through a decorator, as one value: :func:`recipe_options` gives a
:class:`RecipeOptions`, :func:`sample_options` a ``{field: value}`` dict of ``sample`` settings.
Every value left out is None, and the library merges the given ones into the recipe by one rule,
:func:`odmaug.config.merge_options` (None: keep the recipe's value).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, List, Optional, Sequence

import typer

from odmaug.config import Recipe, load_recipe, merge_options
from odmaug.errors import OdmaugError


def _option(kind: Any, names: str, help: str) -> Any:
    """``Annotated[Optional[kind], typer.Option(*names.split(), help=help)]``: an option whose absence is None."""
    return Annotated[Optional[kind], typer.Option(*names.split(), help=help)]


RECIPE_OPTIONS: dict[str, Any] = {
    "recipe": _option(Path, "--recipe -r", help="Recipe YAML (default: built-in defaults)."),
    "overrides": _option(List[str], "--set -s", help="Override a recipe value, e.g. --set train.lr=2e-4 (repeatable)."),
    "data_dir": _option(Path, "--data-dir", help="Folder holding retinamnist.npz (default $ODMAUG_DATA_DIR)."),
    "runs_dir": _option(Path, "--runs-dir", help="Where run folders go (default $ODMAUG_RUNS_DIR or ./runs)."),
    "device": _option(str, "--device", help="auto, cpu, cuda or mps (default: the recipe's, usually auto)."),
    "seed": _option(int, "--seed", help="Seed for every random draw (default: the recipe's)."),
    "log": _option(str, "--log", help="jsonl (default: log.jsonl only, always written) or tensorboard: also "
                   "TensorBoard event files (losses, learning rate, throughput, sample grids, classifier val QWK) "
                   "under each run and classifier folder; needs pip install \"odmaug\\[tensorboard]\"."),
}
"""The options that locate and adjust a recipe (each None when not given)."""

SAMPLE_OPTIONS: dict[str, Any] = {
    "sampler": _option(str, "--sampler", help="ddim, ddpm, dpmpp-2m or unipc."),
    "steps": _option(int, "--steps", help="Denoising steps."),
    "guidance_scale": _option(float, "--guidance-scale --guidance", help="Classifier-free guidance scale s (1: none)."),
    "eta": _option(float, "--eta", help="DDIM eta (0: deterministic DDIM)."),
    "timestep_spacing": _option(str, "--timestep-spacing", help="trailing, leading or linspace."),
    "precision": _option(str, "--precision", help="auto (bf16 where the device computes it natively), bf16, fp16 or fp32."),
    "batch_size": _option(int, "--batch-size", help="Images denoised together (does not change the images)."),
    "use_ema": _option(bool, "--ema/--no-ema", help="Use the EMA weights or the raw ones."),
    "ema_decay": _option(float, "--ema-decay", help="Sample with the EMA of this decay: the run's train.ema_decay "
                         "or one of its train.ema_decays (default: the recipe's sample.ema_decay, else "
                         "train.ema_decay); ignored with --no-ema."),
    "compile": _option(bool, "--compile/--no-compile", help="torch.compile the network (auto: when the job pays for it)."),
}
"""The fields of the recipe's ``sample`` section as options, named as the fields, so that an error
from :func:`odmaug.config.merge_options` names the option as it was typed (None: the recipe's)."""

OPTIONS = {**RECIPE_OPTIONS, **SAMPLE_OPTIONS}


@dataclass(frozen=True)
class RecipeOptions:
    """The recipe options of a command line (None, or empty: not given)."""

    recipe: Optional[Path] = None
    overrides: Sequence[str] = field(default_factory=tuple)
    data_dir: Optional[Path] = None
    runs_dir: Optional[Path] = None
    device: Optional[str] = None
    seed: Optional[int] = None
    log: Optional[str] = None

    def load(self, path: Optional[Path] = None, before: Sequence[str] = (), default: Optional[Path] = None) -> Recipe:
        """The recipe file (``path``, else ``--recipe``, else ``default``, else the built-in defaults)
        with the ``before`` and then the ``--set`` overrides, then ``--device``, ``--seed`` and
        ``--data-dir`` merged in (:func:`odmaug.config.merge_options`: None keeps the recipe's);
        ``--log`` turns on its logger for the command (:func:`odmaug.tensorboard.use`). Every name the
        recipe chooses is checked against its registry (:func:`odmaug.commands.names.check_names`)."""
        from odmaug import tensorboard
        from odmaug.commands.names import check_names

        tensorboard.use(self.log)
        source = path or self.recipe or default
        cfg = load_recipe(source, [*before, *(self.overrides or ())])
        cfg = merge_options(cfg, device=self.device, seed=self.seed)
        try:
            return check_names(merge_options(cfg, "data", data_dir=self.data_dir))
        except OdmaugError as err:  # name the file, as a type error in it does
            raise OdmaugError(f"{source}: {err}" if source else str(err)) from None


def grouped_options(into: str, names: Sequence[str], make: Callable[..., Any]) -> Callable:
    """A decorator that adds the shared options ``names`` to a command, after its own parameters;
    the command receives them as one argument ``into`` = ``make(**values)``."""

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [_evaluated(p, command) for p in signature.parameters.values() if p.name != into]
        shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=OPTIONS[n])
                  for n in names]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return command(**kwargs, **{into: make(**values)})

        wrapper.__signature__ = signature.replace(parameters=[*own, *shared])  # what Typer reads
        wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *shared]}
        return wrapper

    return decorate


def _evaluated(param: inspect.Parameter, command: Callable) -> inspect.Parameter:
    """``param`` with its annotation evaluated (a string under ``from __future__ import annotations``);
    one that names what only the caller knows stays a string (the grouped value of another decorator)."""
    if not isinstance(param.annotation, str):
        return param
    try:
        return param.replace(annotation=eval(param.annotation, getattr(command, "__globals__", {})))  # noqa: S307
    except NameError:
        return param


def recipe_options(*names: str) -> Callable:
    """Add the recipe options ``names`` (default all of :data:`RECIPE_OPTIONS`) as ``options: RecipeOptions``."""
    return grouped_options("options", names or tuple(RECIPE_OPTIONS), RecipeOptions)


def sample_options(*names: str) -> Callable:
    """Add the sampling options ``names`` (default all of :data:`SAMPLE_OPTIONS`) as ``sample: dict``."""
    return grouped_options("sample", names or tuple(SAMPLE_OPTIONS), dict)


GeneratorRunOption = Annotated[Path, typer.Option("--run", help="Generator run folder (made by odmaug train-generator).")]
