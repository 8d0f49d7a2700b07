"""The Typer application and the options every command shares.

Commands live in ``odmaug/cli/cmd_*.py`` modules; each registers itself on :data:`app` (or on a
sub-app) when imported, and ``odmaug.cli`` imports them all. Library errors (``OdmaugError``)
become one ``error: ...`` line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from typing import Any, Optional

import click
import typer
from typer.core import TyperGroup

from odmaug.errors import OdmaugError

# Typer >= 0.20 parses with its own copy of click (typer._click), older typer with click itself:
# its usage-error class is found from the one it exports, so both raise into the same handler.
USAGE_ERRORS = (click.UsageError, next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"))


class OdmaugGroup(TyperGroup):
    """A command group that turns user errors into one line and an exit code."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _flags_without_type(super().get_params(ctx))

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, OdmaugGroup):  # a sub-group does its own
            _flags_without_type(command.get_params(ctx))
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OdmaugError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=err.exit_code) from None
        except USAGE_ERRORS as err:  # a command's options: unknown, missing or a bad value
            typer.echo(f"error: {' '.join(err.format_message().split())} (see --help)", err=True)
            raise typer.Exit(code=OdmaugError.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: files written so far are complete; re-run to resume", err=True)
            raise typer.Exit(code=130) from None
        except OSError as err:
            # Last resort for a file operation no library code turned into an OdmaugError (a log
            # line, a folder): still one line. Without a file name it is not about a path: raise it.
            if err.filename is None:
                raise
            typer.echo(f"error: {os_error_line(err)}", err=True)
            raise typer.Exit(code=OdmaugError.exit_code) from None


def _flags_without_type(params: list[click.Parameter]) -> list[click.Parameter]:
    """``params`` with their flags' type column blanked in ``--help``.

    Typer labels every flag ``<bool>``, which reads as "takes a value" (``--force <bool>``); a flag
    takes none, so its names alone are shown (an empty metavar is what the help prints instead).
    """
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


def os_error_line(err: OSError) -> str:
    """``cannot write <path>: <reason>`` for an error only a write gives; else ``<path>: <reason>``."""
    import errno

    reason = err.strerror or str(err)
    # only these say "write" for sure; a permission or folder error could be a read's too
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
        return f"cannot write {err.filename}: {reason}"
    return f"{err.filename}: {reason}"


# torchrun's own parser reads options up to the script's arguments and accepts abbreviations, so
# odmaug's --run and --n would be taken as --run-path and --nnodes (an error) without the "--".
TORCHRUN_HELP = (
    "Several processes (DDP training, sharded synthesis): torchrun --nproc_per_node K -m odmaug -- COMMAND ... "
    "The -- keeps torchrun from reading odmaug's options (--run, --n) as abbreviations of its own."
)

app = typer.Typer(
    cls=OdmaugGroup,
    name="odmaug",
    help="Ordinal Diffusion Model augmentation for medical severity classifiers.\n\n"
    + TORCHRUN_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(cls=OdmaugGroup, help="Look at datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from odmaug import __version__

        typer.echo(f"odmaug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    # Eager: handled while the options are read, before the group asks for a command ("Missing command").
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass
