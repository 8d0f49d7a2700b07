"""One rich console and one progress-bar style (rate and ETA) for every stage.

Under torchrun every process runs the same code; warnings and progress come from rank 0 only, so
a log holds one line per event rather than one per process. When stderr is not a terminal (a log
file, a pipe) a live bar shows nothing until it ends, so :func:`progress` writes plain periodic
lines there instead.
"""

from __future__ import annotations

import sys
import time

from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from odmaug.distributed import process_rank  # the one reader of torchrun's variables; imports no torch

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


PLAIN_EVERY_S = 30.0
"""Seconds between two plain progress lines of a task when stderr is not a terminal."""


def is_main_process() -> bool:
    """True on rank 0 and without torchrun: the process that speaks for all."""
    return process_rank() == 0


def _clock(seconds: Optional[float]) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress(Progress):
    """The rich bar's interface for a stderr that is not a terminal: no live display, but a plain
    line per task (count, percent, rate, elapsed, ETA, info) at most every ``every`` seconds, and
    one when the bar stops (not for transient bars, whose end a terminal does not keep either)."""

    def __init__(self, unit: str, every: float, transient: bool, console: Console) -> None:
        super().__init__(console=console, disable=True)
        self.unit, self.every, self.keep_end = unit, every, not transient
        self._said: dict[TaskID, tuple[float, float, Any]] = {}  # task -> (time of its last line, completed, info)
        self._stopped = False

    def add_task(self, description: str, start: bool = True, total: Optional[float] = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        self._said[task_id] = (time.monotonic(), completed, fields.get("info"))
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._maybe_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def _maybe_line(self, task_id: TaskID) -> None:
        if time.monotonic() - self._said[task_id][0] >= self.every:
            self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        done = f"{task.completed:g}" + (f"/{task.total:g}" if task.total is not None else "") + f" {self.unit}"
        if task.total:
            done += f" ({100 * task.completed / task.total:.0f}%)"
        parts = [f"{task.description}: {done}"]
        speed = task.finished_speed or task.speed
        if speed:
            parts.append(f"{speed:.2f} {self.unit}/s")
        parts.append(f"elapsed {_clock(task.elapsed)}")
        if not task.finished and task.time_remaining is not None:
            parts.append(f"eta {_clock(task.time_remaining)}")
        if task.fields.get("info"):
            parts.append(str(task.fields["info"]))
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
        self._said[task_id] = (time.monotonic(), task.completed, task.fields.get("info"))

    def stop(self) -> None:
        if not self._stopped and self.keep_end:  # the end state, unless the last line showed it
            for task in self.tasks:
                if self._said.get(task.id, (0, None, None))[1:] != (task.completed, task.fields.get("info")):
                    self._line(task.id)
        self._stopped = True
        super().stop()


def progress(unit: str = "it", transient: bool = False, every: Optional[float] = None) -> Progress:
    """A progress bar showing count, rate (``unit``/s), elapsed time and ETA.

    Put live figures (latest losses, QWK) in the task's ``info`` field:
    ``bar.update(task, advance=1, info="loss 0.031")``; add tasks with ``info=""``.

    On a terminal, a rich live bar; otherwise (a log file, a pipe) a :class:`PlainProgress`
    writing a line every ``every`` seconds (default :data:`PLAIN_EVERY_S`); on ranks other than 0
    under torchrun, nothing.
    """
    if not is_main_process():
        return Progress(console=err_console, disable=True)
    if not err_console.is_terminal and not err_console.is_jupyter:
        return PlainProgress(unit, PLAIN_EVERY_S if every is None else every, transient, err_console)
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
    """One yellow warning line on stderr, from rank 0 only (torchrun's other processes would repeat it).

    ``message`` is plain text (brackets in paths are not markup) and stays one line in a log.
    """
    if is_main_process():
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warn_once(message: str) -> None:
    """Print ``message`` as a warning unless this command already printed it.

    "This command" is the running click command (its root context's ``meta``, fresh for every
    invocation, also under ``CliRunner``); outside any command (library use) every call warns.
    """
    if _first_time(message):
        warn(message)


def note_once(message: str) -> None:
    """One ``note:`` line on stderr (rank 0), unless this command already printed it (as :func:`warn_once`)."""
    if _first_time(message) and is_main_process():
        err_console.print(f"note: {message}", highlight=False, soft_wrap=True, markup=False)


def _first_time(message: str) -> bool:
    import click

    context = click.get_current_context(silent=True)
    if context is not None:
        said = context.find_root().meta.setdefault("odmaug.warned", set())
        if message in said:
            return False
        said.add(message)
    return True
