"""One check before every command that writes: `--out` may not overwrite, contain or sit inside an input.

`guard_outputs(app)` wraps every registered command, so a command added later is covered without
remembering to call anything: its `out` parameter is checked against every other path it was given
(`sonosynth.outputs.check_output_location`). Commands whose `--out` is a single file are checked
only against being one of their inputs; a command that writes into its input by design is listed
in `WRITES_INTO_INPUT`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from sonosynth.outputs import OutputLocationError, check_output_location

# Commands whose --out is a file (a table, a PNG): only "is it one of the inputs?" applies.
FILE_OUTPUTS = frozenset({"split", "grid"})
# Commands that add their tables to the input folder by design (never replacing anything in it).
WRITES_INTO_INPUT = frozenset({"reader-study results"})


def _paths(value: object) -> Iterator[Path]:
    if isinstance(value, Path):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _paths(item)


def check_output_file(out: Path, sources: list[Path]) -> None:
    """A single output file may not be one of the inputs (a manifest folder stands for its manifest.csv)."""
    target = Path(os.path.abspath(out)).resolve()
    for source in sources:
        candidates = [source, source / "manifest.csv"] if source.is_dir() else [source]
        if any(target == Path(os.path.abspath(c)).resolve() for c in candidates if c.exists()):
            raise OutputLocationError(f"--out {out} is the input {source}; writing it would replace it.")


def _guarded(name: str, callback: Callable) -> Callable:
    @functools.wraps(callback)
    def guarded(*args, **kwargs):
        out = kwargs.get("out")
        if isinstance(out, Path) and name not in WRITES_INTO_INPUT:
            sources = [path for key, value in kwargs.items() if key != "out" for path in _paths(value)]
            if name in FILE_OUTPUTS:
                check_output_file(out, sources)
            else:
                check_output_location(out, sources)
        return callback(*args, **kwargs)

    return guarded


def _command_name(info) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def guard_outputs(app: typer.Typer, prefix: str = "") -> None:
    """Wrap the callback of every command of `app` and its sub-apps with the output-location check."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_output_guarded", False):
            info.callback = _guarded(f"{prefix}{_command_name(info)}", info.callback)
            info.callback._output_guarded = True
    for group in app.registered_groups:
        guard_outputs(group.typer_instance, f"{prefix}{group.name} ")


__all__ = ["FILE_OUTPUTS", "WRITES_INTO_INPUT", "check_output_file", "guard_outputs"]
