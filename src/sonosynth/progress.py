"""Progress bars for long work, on stderr so that stdout stays clean for tables and pipes.

Rich allows one live display at a time. When a study shows its grid progress, every inner
`track()` (an ingest, a generator fit, a classifier's epochs) joins that display as a transient
sub-task instead of opening a second one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
stderr_console = Console(stderr=True)
_active: list[Progress] = []


def progress_columns(*extra: ProgressColumn) -> tuple[ProgressColumn, ...]:
    """The columns every sonosynth bar shows, with `extra` ones (loss, rate, ...) before the times."""
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra, TimeElapsedColumn(),
            TimeRemainingColumn())


@contextlib.contextmanager
def progress_display() -> Iterator[Progress]:
    """One live display that inner `track()` calls attach to."""
    if _active:
        yield _active[-1]
        return
    with Progress(*progress_columns(), console=stderr_console, transient=False) as progress:
        _active.append(progress)
        try:
            yield progress
        finally:
            _active.pop()


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar; `enabled=False` (library use, tests) iterates silently."""
    if not enabled:
        yield from items
        return
    total = total if total is not None else _length(items)
    if _active:
        progress = _active[-1]
        task = progress.add_task(f"  {description}", total=total)
        try:
            for item in items:
                yield item
                progress.advance(task)
        finally:
            progress.remove_task(task)
        return
    with Progress(*progress_columns(), console=stderr_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


def _length(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None
