"""Every odmaug command in README.md and docs/*.md works as written; every cited document exists.

Which lines are commands: each line of a fenced code block (``\\`` continuations joined) and each
inline code span outside headings (a heading names a command, it does not run one) whose first
word, after ``VAR=value`` assignments, is ``odmaug``, or ``torchrun`` with ``odmaug`` among its
words. Fragments such as ``--set train.lr=2e-4`` or a bare ``torchrun --nproc_per_node 2`` are
not commands.

Placeholders: a word that is ``...`` or ``<something>`` stands for a value the reader supplies; it
is replaced by ``placeholder``, so it may only stand where a value goes (``--run ...``).

Where: README.md and every ``docs/*.md``. The results and speed studies moved out of the README
into docs/results.md and docs/performance.md keep their commands under the same check: each of
those documents must yield commands (:data:`MOVED_OUT`), so a study command cannot leave the test
by leaving the README.

Run or parse: the commands in :data:`RUN` are cheap, stand in the README, and are run for real in a
scratch folder (they read RetinaMNIST, so they are skipped without it, like the other real-data
tests). The others (hours of training) are parsed without being invoked: torchrun's own launcher parser
(torchrun lines) must accept the line and hand the module exactly the words written after
``odmaug``; odmaug's CLI then resolves the command and builds its context, which rejects unknown
or misspelt options, bad values and missing required options; a ``--set`` must name a real recipe
key, checked by loading the recipe with the overrides.

Cited documents: paths under ``docs/`` ending in ``.md``, all-capitals names ending in ``.md``
(the convention for top-level documents, as README.md) and markdown link targets ending in ``.md``,
in README.md, docs/, odmaug/, studies/, recipes/ and tests/, must exist relative to the
repository or to the citing file. Other lower-case ``.md`` names are files odmaug writes
(``report/report.md``), not citations.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND_SOURCES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Documents the README's results and performance notes moved to: their commands are parsed too.
MOVED_OUT = (REPO / "docs" / "results.md", REPO / "docs" / "performance.md")
RUN = (
    "odmaug data info --recipe recipes/quickstart.yaml --grid retinamnist.png",
    "odmaug benchmark --recipe recipes/quickstart.yaml --dry-run",
    "odmaug benchmark --recipe recipes/smoke.yaml --set benchmark.protocol=cv --set benchmark.cv.folds=3 --dry-run --no-estimate",
)
PLACEHOLDER = re.compile(r"^(\.\.\.|<[^<>]+>)$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def command_words(line: str) -> list[str] | None:
    """The words of ``line`` without leading ``VAR=value`` assignments, or None if it is no command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: prose, not a command
        return None
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    if words[:1] == ["odmaug"] or (words[:1] == ["torchrun"] and "odmaug" in words):
        return ["placeholder" if PLACEHOLDER.match(w) else w for w in words]
    return None


def markdown_commands(text: str) -> list[str]:
    """The command lines of a markdown text (see the module docstring), in order of appearance."""
    candidates: list[str] = []
    for block in FENCED.findall(text):
        candidates += block.replace("\\\n", " ").splitlines()
    prose = "\n".join(line for line in FENCED.sub("", text).splitlines() if not line.lstrip().startswith("#"))
    candidates += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    # shown as the test id: the shell comment (a "#" after a space) cut off, spaces collapsed
    return [" ".join(re.split(r"\s#", line, maxsplit=1)[0].split()) for line in candidates if command_words(line)]


def all_commands() -> list[str]:
    lines = [line for path in COMMAND_SOURCES for line in markdown_commands(path.read_text(encoding="utf-8"))]
    return list(dict.fromkeys(lines))  # a command repeated in the text is checked once


def args_for_odmaug(words: list[str]) -> list[str]:
    """The arguments odmaug's CLI receives: the words after ``odmaug``, or what torchrun hands on."""
    if words[0] == "odmaug":
        return words[1:]
    from torch.distributed.run import get_args_parser

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parsed = get_args_parser().parse_args(words[1:])
    except SystemExit:
        error = stderr.getvalue().strip().splitlines()[-1:]
        pytest.fail(f"torchrun's launcher rejects {shlex.join(words)!r}: {' '.join(error)}")
    assert parsed.module and parsed.training_script == "odmaug", f"{shlex.join(words)}: not `-m odmaug`"
    written = words[words.index("odmaug") + 1:]
    handed = list(parsed.training_script_args)
    # Some Python versions' argparse drop the first "--" of a REMAINDER, others keep it; odmaug's
    # CLI reads both the same, but any other difference means torchrun swallowed odmaug's words.
    assert handed in (written, written[1:] if written[:1] == ["--"] else None), (
        f"torchrun hands odmaug {handed}, the README writes {written}"
    )
    return handed


def parse_with_cli(args: list[str]):
    """Resolve the (sub)command and build its context as ``odmaug ARGS`` would, without invoking it."""
    import typer

    from odmaug.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("odmaug", list(args))
    while hasattr(command, "resolve_command"):  # a group: its first leftover word names the subcommand
        rest = [*ctx._protected_args, *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def check_command(line: str) -> None:
    """Fail unless ``line`` parses with torchrun's launcher (if any), odmaug's CLI and its recipe."""
    from odmaug.config import load_recipe

    words = command_words(line)
    assert words, f"not a command: {line!r}"
    args = args_for_odmaug(words)
    try:
        ctx = parse_with_cli(args)
    except Exception as err:  # click's UsageError family: unknown option, missing option, bad value
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        pytest.fail(f"odmaug's CLI rejects {line!r}: {message}")
    if ctx.params.get("overrides"):
        recipe = ctx.params.get("recipe")
        load_recipe(REPO / recipe if recipe is not None else None, ctx.params["overrides"])


def test_readme_lists_the_pipeline_commands():
    """The extraction itself: it must find the fenced, torchrun and inline commands of the README."""
    commands = all_commands()
    firsts = {command_words(c)[1] if c.startswith("odmaug") else "torchrun" for c in commands}
    assert {"data", "train-generator", "sample", "augment", "balance", "benchmark", "torchrun"} <= firsts
    assert any(c.startswith("odmaug benchmark --recipe recipes/smoke.yaml") for c in commands)  # inline
    assert len(commands) >= 20
    readme = markdown_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert set(RUN) <= set(readme), "a command the tests run is no longer in the README: update RUN"


@pytest.mark.parametrize("path", MOVED_OUT, ids=lambda p: p.name)
def test_moved_out_documents_are_checked(path):
    """docs/results.md and docs/performance.md are command sources, and their commands are found."""
    assert path in COMMAND_SOURCES
    commands = markdown_commands(path.read_text(encoding="utf-8"))
    assert commands, f"{path.name}: no odmaug command found; the study commands would go unchecked"
    assert set(commands) <= set(all_commands())


@pytest.mark.parametrize("line", all_commands())
def test_command_parses(line):
    check_command(line)


@pytest.mark.parametrize("line", RUN)
def test_cheap_command_runs(line, tmp_path, monkeypatch, retinamnist_dir):
    from typer.testing import CliRunner

    from odmaug.cli import app

    # The README's relative paths (recipes/..., ./runs, output files) resolve in a scratch folder.
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ODMAUG_RUNS_DIR", raising=False)
    result = CliRunner().invoke(app, command_words(line)[1:])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "line, why",
    [
        ("torchrun --nproc_per_node 4 -m odmaug augment --run x --n 50000", "launcher rejects"),
        ("odmaug augment --runs x --n 5", "No such option"),
        ("odmaug augment --n 5", "Missing option"),
        ("odmaug sample --run x --per-grade many", "Invalid value"),
        ("odmaug benchmark --recipe recipes/smoke.yaml --set train.step=3", "unknown key"),
    ],
)
def test_check_rejects_broken_commands(line, why):
    """The README check catches the faults it exists for (the first is the README's old torchrun line)."""
    from odmaug.errors import OdmaugError

    with pytest.raises((pytest.fail.Exception, OdmaugError), match=why):
        check_command(line)


@pytest.mark.parametrize("command", ["train-generator", "augment", "benchmark"])
def test_help_shows_the_torchrun_launch(command):
    """The multi-process commands' --help gives the torchrun form that works (with the "--")."""
    from typer.testing import CliRunner

    from odmaug.cli import app

    wide = {"COLUMNS": "200"}  # rich wraps help at the terminal width, which could split the command
    result = CliRunner().invoke(app, [command, "--help"], env=wide)
    assert result.exit_code == 0 and f"-m odmaug -- {command}" in result.output, result.output
    assert "-m odmaug -- COMMAND" in CliRunner().invoke(app, ["--help"], env=wide).output


CITED_DOC = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md|(?:[\w.-]+/)*[A-Z][A-Z0-9_-]*\.md)(?![\w/-])")
LINKED_DOC = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")
CITING_FILES = ["README.md", "docs/*.md", "odmaug/**/*.py", "studies/**/*.py", "studies/README.md", "recipes/*.yaml", "tests/*.py"]


def test_cited_documents_exist():
    missing = []
    for pattern in CITING_FILES:
        for path in sorted(REPO.glob(pattern)):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                for target in CITED_DOC.findall(line) + LINKED_DOC.findall(line):
                    if not ((REPO / target).is_file() or (path.parent / target).is_file()):
                        missing.append(f"{path.relative_to(REPO)}:{number} cites {target}")
    assert not missing, "documents cited but not in the repository:\n" + "\n".join(missing)
