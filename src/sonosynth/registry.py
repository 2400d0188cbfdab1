"""A name -> entry table whose built-in entries register themselves when their modules are imported.

The generator registry and the classifier zoo are both one of these: a module adds its entries with
a decorator at import time, and the table imports the built-in modules only when it is first read,
so `sonosynth --help` never loads torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Generic, TypeVar

from sonosynth.errors import SonosynthError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    def __init__(self, what: str, builtin_modules: Iterable[str]) -> None:
        self.what = what  # named in errors: "unknown generator 'x'"
        self.builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, entry: Entry) -> None:
        self._entries[name] = entry

    def names(self) -> list[str]:
        self._import_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        self._import_builtins()
        if name not in self._entries:
            raise SonosynthError(f"unknown {self.what} {name!r}; available: {', '.join(sorted(self._entries))}.")
        return self._entries[name]

    def _import_builtins(self) -> None:
        for module in self.builtin_modules:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name != module:  # a real missing dependency, not a module absent from this install
                    raise


__all__ = ["Registry"]
