"""One registry shape for everything a recipe or a command chooses by name.

Samplers, data sources, generator networks, feature extractors, balancing strategies, training
objectives (what the network predicts) and the benchmark's arms are each a :class:`Registry`:
implementations register under a name, callers get them by name, and an unknown name is one
error listing the known ones. Adding one of these is one module (or function) plus one
registration; nothing else lists the names.

Registries live beside what they hold (``odmaug.diffusion.samplers.SAMPLERS``,
``odmaug.data.sources.DATA_SOURCES``...), so the recipe sections in :mod:`odmaug.config` (a lower
floor) check types only; names are checked against the registries where those are populated: at
the command boundary (:func:`odmaug.commands.recipes.check_names`) before any work, and again by
:meth:`Registry.get` wherever a library call uses them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

from odmaug.errors import OdmaugError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered implementation: its name, the object, and a one-line summary for ``--help``."""

    name: str
    item: T
    summary: str


class Registry(Generic[T]):
    """Named implementations of one kind of thing (``kind``: "sampler", "arm"...).

    Raises:
        OdmaugError: :meth:`get` of an unknown name (one line naming the known ones);
        ValueError: registering a name twice (a programming error, not a user's).
    """

    def __init__(self, kind: str, plugins: tuple[str, ...] = ()) -> None:
        """``plugins``: modules (by name, so this floor imports nothing above it) that register
        more entries when imported; they are imported on the first read of the registry."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._plugins = plugins

    def _read(self) -> dict[str, Entry[T]]:
        """The entries, once every plug-in module has registered its own."""
        plugins, self._plugins = self._plugins, ()  # cleared first: a plug-in may read the registry
        for module in plugins:
            importlib.import_module(module)
        return self._entries

    def add(self, name: str, item: T, summary: str = "") -> T:
        """Register ``item`` under ``name``; returns ``item``."""
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = Entry(name, item, summary)
        return item

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda item: self.add(name, item, summary)

    def get(self, name: str) -> T:
        """The implementation registered as ``name``."""
        return self.entry(name).item

    def entry(self, name: str) -> Entry[T]:
        """The whole :class:`Entry` of ``name`` (item and summary)."""
        if name not in self._read():
            raise OdmaugError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        """The error line for an unknown ``name``."""
        return f"unknown {self.kind} '{name}' (known: {', '.join(self._read()) or 'none registered'})"

    def check(self, name: str) -> None:
        """Raise :class:`OdmaugError` unless ``name`` is registered."""
        self.entry(name)

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._read())

    def values(self) -> list[T]:
        """Registered implementations, in registration order."""
        return [e.item for e in self._read().values()]

    def entries(self) -> list[Entry[T]]:
        """Registered entries, in registration order."""
        return list(self._read().values())

    def __contains__(self, name: object) -> bool:
        return name in self._read()

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())
