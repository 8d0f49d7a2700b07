"""One rich console and one progress-bar style (rate and ETA) for every stage."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Logs and pipes get wide tables and bars (rich would cut them at 80 columns); terminals use their width.
console = Console(width=None if sys.stdout.isatty() else 150)
"""Tables and results go to stdout."""

err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
"""Progress, errors and warnings go to stderr."""


class RateColumn(ProgressColumn):
    """Completed units per second, e.g. ``3.41 img/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-" if speed is None else f"{speed:.2f} {self.unit}/s", style="cyan")


def progress(unit: str = "it", transient: bool = False) -> Progress:
    """A progress bar showing count, rate (``unit``/s), elapsed time and ETA.

    Put live figures (latest losses, QWK) in the task's ``info`` field:
    ``bar.update(task, advance=1, info="loss 0.031")``; add tasks with ``info=""``.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=err_console,
        transient=transient,
        refresh_per_second=4,
    )


def warn(message: str) -> None:
    """One yellow warning line on stderr."""
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
