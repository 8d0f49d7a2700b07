"""The package's import layers, checked on the source: lower packages never import higher ones.

Every module under ``odmaug/`` is parsed (imports inside functions count too, since a lazy import
is still a dependency); a module name held in a string, as the extractor registry's plug-ins are,
is not an import and is allowed.

    data/, diffusion/  ->  none of classify, metrics, benchmark*, augment, cli
    data/              ->  not runs (data does not know about run folders)
    metrics/           ->  not classify (classify imports metrics, one way)
    anything but cli/ and __main__  ->  not cli
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import odmaug

PACKAGE = Path(odmaug.__file__).resolve().parent
HIGHER = ("classify", "metrics", "benchmark", "augment", "cli")
FORBIDDEN = {
    "data": HIGHER + ("runs",),
    "diffusion": HIGHER,
    "metrics": ("classify",),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every odmaug module ``path`` imports, as dotted names (relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from odmaug import cli"
    return {name for name in found if name == "odmaug" or name.startswith("odmaug.")}


def _layer(name: str) -> str:
    """The first part below ``odmaug`` ("benchmark_plan" counts as "benchmark")."""
    part = name.split(".")[1] if "." in name else ""
    return "benchmark" if part.startswith("benchmark") else part


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_modules_found():
    assert {_layer(_module_name(p)) for p in MODULES} >= {"data", "diffusion", "metrics", "classify", "cli"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_layer_rule(path):
    layer = _layer(_module_name(path))
    imported = _imports(path)
    bad = sorted(name for name in imported if _layer(name) in FORBIDDEN.get(layer, ()))
    assert not bad, f"odmaug/{path.relative_to(PACKAGE)} ({layer}/) imports {bad}"
    if layer != "cli" and path.name != "__main__.py":
        callers_of_cli = sorted(name for name in imported if _layer(name) == "cli")
        assert not callers_of_cli, f"odmaug/{path.relative_to(PACKAGE)} imports the CLI: {callers_of_cli}"


def test_the_rule_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    fake = tmp_path / "odmaug" / "data"
    fake.mkdir(parents=True)
    source = fake / "x.py"
    source.write_text("def f():\n    from ..classify import models\n    import odmaug.runs\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "odmaug")
    assert {"odmaug.classify", "odmaug.classify.models", "odmaug.runs"} <= _imports(source)
