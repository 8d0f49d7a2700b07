"""The package's import floors, checked on the source: no module imports a higher floor, and no
group of modules imports itself in a circle.

Every module under ``odmaug/`` is parsed (imports inside functions count too, since a lazy import
is still a dependency); a module name held in a string is not an import. Floors, lowest first::

    foundation  errors, registry, atomic, yaml_strict, device, digest, precision, probe,
                tensorboard, distributed, figures, download, train_step (and the package face)
    config, console
    runs, train_state
    data  <  metrics  <  diffusion  <  classify  <  augment  <  benchmark
    commands    what each command does (settings merged once, names checked)
    cli, __main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import odmaug

PACKAGE = Path(odmaug.__file__).resolve().parent
FLOORS = [
    {"", "errors", "registry", "atomic", "yaml_strict", "device", "digest", "precision", "probe", "tensorboard",
     "distributed", "figures", "download", "train_step"},
    {"config", "console"},
    {"runs", "train_state"},
    {"data"}, {"metrics"}, {"diffusion"}, {"classify"}, {"augment"}, {"benchmark"},
    {"commands"},
    {"cli", "__main__"},
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every odmaug module or package ``path`` imports, as dotted names (relative imports resolved;
    ``from package import submodule`` names the submodule, not the package face)."""
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
            named = {f"{base}.{alias.name}" for alias in node.names}
            found |= named & KNOWN  # submodules
            if named - KNOWN:  # names defined in (or re-exported by) the module ``base`` itself
                found.add(base)
    return {name for name in found if name == "odmaug" or name.startswith("odmaug.")}


MODULES = sorted(PACKAGE.rglob("*.py"))
KNOWN = {_module_name(p) for p in MODULES}


def _layer(name: str) -> str:
    """The part below ``odmaug`` (``""`` for the package face)."""
    return name.split(".")[1] if "." in name else ""


def _graph() -> dict[str, set[str]]:
    """Module -> the modules it imports (an imported attribute counts as its module)."""
    def owner(name: str) -> str:
        while name not in KNOWN:
            name = name.rpartition(".")[0]
        return name

    return {_module_name(p): {owner(n) for n in _imports(p)} - {_module_name(p)} for p in MODULES}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_floor():
    assert {_layer(_module_name(p)) for p in MODULES} <= set(FLOOR)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_goes_up(path):
    floor = FLOOR[_layer(_module_name(path))]
    up = sorted(name for name in _imports(path) if FLOOR[_layer(name)] > floor)
    assert not up, f"odmaug/{path.relative_to(PACKAGE)} (floor {floor}) imports higher floors: {up}"


def test_no_circles():
    assert _circles(_graph()) == []


def test_the_rules_see_lazy_and_relative_imports_and_circles(tmp_path, monkeypatch):
    fake = tmp_path / "odmaug" / "data"
    fake.mkdir(parents=True)
    source = fake / "x.py"
    source.write_text("def f():\n    from ..classify import models\n    import odmaug.runs\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "odmaug")
    assert {"odmaug.classify.models", "odmaug.runs"} <= _imports(source)
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
