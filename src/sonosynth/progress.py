"""Progress of long work, on a terminal and off it; every loop in sonosynth reports through `task()`.

On a terminal, a task is a rich bar on stderr. Rich allows one live display at a time, so while a
study shows its grid progress every inner task (an ingest, a generator fit, a classifier's epochs)
joins that display as a transient sub-task instead of opening a second one.

Off a terminal (piped to a file, nohup, tmux logging, a cluster scheduler) a task writes plain log
lines instead: at most one every `PLAIN_INTERVAL` seconds while it runs, prefixed with the study unit
it belongs to, e.g. `[12/85] fit SinDDM fold 2 image 3: step 800/3600, 2m10s, ETA 5m, loss 0.0312`.

A loop reports with `task.update(completed, **scalars)`; numeric scalars (losses, learning rates)
are shown beside the bar and, inside a study unit with an events folder, written to TensorBoard.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Self, TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sonosynth.logs import console_level, interactive, stderr_console

T = TypeVar("T")
log = logging.getLogger(__name__)
PLAIN_INTERVAL = 30.0
SHOWN_SCALARS = 3
_active: list[Progress] = []
_unit: list[str] = []  # the study unit the current work belongs to (plain-line prefix)
# Numbered labels of the units the study is running, by description ("[12/85] fit SinDDM fold 2 image 3").
unit_labels: dict[str, str] = {}
# Called with each plain progress line (throttled), e.g. to keep a run's status.json current.
listeners: list[Callable[[str], None]] = []


def format_duration(seconds: float, coarse: bool = False) -> str:
    """45s, 2m10s, 1h05m; `coarse` rounds to the largest unit (an ETA: 45s, 5m, 1h05m)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m" if coarse and minutes >= 3 else f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_columns(*extra: ProgressColumn) -> tuple[ProgressColumn, ...]:
    """The columns every sonosynth bar shows, with `extra` ones (loss, rate, ...) before the times."""
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *extra, TimeElapsedColumn(),
            TimeRemainingColumn())


def _columns() -> tuple[ProgressColumn, ...]:
    # The ETA is ours (a field), not rich's rate estimate: rich's counts instantly reused units as work done.
    return (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"))


def bars_enabled() -> bool:
    """Rich bars only on a terminal and when info messages are shown (not under -q)."""
    return interactive() and console_level() <= logging.INFO


@contextlib.contextmanager
def progress_display() -> Iterator[Progress]:
    """One live display that inner tasks attach to (a no-op display off a terminal)."""
    if _active:
        yield _active[-1]
        return
    with Progress(*_columns(), console=stderr_console, transient=False, disable=not bars_enabled()) as progress:
        _active.append(progress)
        try:
            yield progress
        finally:
            _active.pop()


@contextlib.contextmanager
def unit(description: str) -> Iterator[None]:
    """Work inside belongs to the study unit `description`; its progress lines carry the unit's label.

    The label is the numbered one the study gave the unit (`[12/85] fit SinDDM fold 2 image 3`) when
    known in this process (`unit_labels`), else the bare description (a worker process).
    """
    _unit.append(unit_labels.get(description, description))
    try:
        yield
    finally:
        _unit.pop()


def current_unit() -> str | None:
    return _unit[-1] if _unit else None


class Task:
    """One loop's progress: `update(completed, **scalars)` or `advance(n)`, then `close()` (or use `with`).

    `unit` names what is counted (step, epoch, image); `completed` may start above 0 for a resumed
    run, and the ETA counts only the work done since this task started.
    """

    def __init__(self, description: str, total: float | None = None, *, completed: float = 0, unit: str = "",
                 tag: str | None = None, enabled: bool = True) -> None:
        self.description, self.total, self.completed, self.unit = description, total, completed, unit
        self.tag = tag
        self.scalars: dict[str, float] = {}
        self.started = time.monotonic()
        self._first = completed
        self._last_line = self.started
        self._mode = ("rich" if bars_enabled() else "plain") if enabled else "off"
        self._own: Progress | None = None
        self._id = None
        if self._mode == "rich":
            if _active:
                self._progress = _active[-1]
                self._id = self._progress.add_task(f"  {description}", total=total, completed=completed, eta="")
            else:
                self._own = self._progress = Progress(*_columns(), console=stderr_console, transient=False)
                self._id = self._progress.add_task(description, total=total, completed=completed, eta="")
                self._own.start()

    # -- reporting
    def update(self, completed: float | None = None, *, advance: float = 0, description: str | None = None,
               **scalars: float) -> None:
        if self._mode == "off":
            return
        if completed is not None:
            self.completed = completed
        self.completed += advance
        if description is not None:
            self.description = description
        numbers = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        self.scalars.update(numbers)
        if numbers:
            from sonosynth import tensorboard_events

            tensorboard_events.scalars(numbers, step=int(self.completed), prefix=self.tag)
        now = time.monotonic()
        if self._mode == "rich":
            text = self.description + "".join(f"  {k} {_number(v)}" for k, v in self._shown())
            self._progress.update(self._id, completed=self.completed, eta=self._eta_text(now),
                                  description=("  " if self._own is None else "") + text)
        if now - self._last_line >= PLAIN_INTERVAL:
            self._last_line = now
            line = self.line(now)
            if self._mode == "plain":
                log.info(line)
            for listener in listeners:
                listener(line)

    def advance(self, n: float = 1, **scalars: float) -> None:
        self.update(advance=n, **scalars)

    def close(self) -> None:
        if self._mode == "rich":
            if self._own is not None:
                self._own.stop()
            else:
                self._progress.remove_task(self._id)
        elif self._mode == "plain" and time.monotonic() - self.started >= PLAIN_INTERVAL:
            # A long task ends with a line, so a log shows where each one finished.
            log.info(self.line(time.monotonic(), finished=True))
        self._mode = "off"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- text
    def _shown(self) -> list[tuple[str, float]]:
        # The first few scalars beside the bar; TensorBoard gets them all.
        return list(self.scalars.items())[:SHOWN_SCALARS]

    def eta(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        done = self.completed - self._first
        if self.total is None or done <= 0:
            return math.inf
        return (self.total - self.completed) * (now - self.started) / done

    def _eta_text(self, now: float) -> str:
        eta = self.eta(now)
        return f"ETA {format_duration(eta, coarse=True)}" if math.isfinite(eta) else ""

    def line(self, now: float | None = None, finished: bool = False) -> str:
        now = time.monotonic() if now is None else now
        prefix = f"{current_unit()}: " if current_unit() else ""
        count = f"{_number(self.completed)}/{_number(self.total)}" if self.total is not None else _number(self.completed)
        parts = [f"{self.unit} {count}".strip(), format_duration(now - self.started)]
        if not finished and math.isfinite(self.eta(now)):
            parts.append(f"ETA {format_duration(self.eta(now), coarse=True)}")
        parts += [f"{k} {_number(v)}" for k, v in self._shown()]
        return f"{prefix}{self.description}: " + ", ".join(parts) + (" (done)" if finished else "")


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


def task(description: str, total: float | None = None, *, completed: float = 0, unit: str = "",
         tag: str | None = None, enabled: bool = True) -> Task:
    """A progress task (see `Task`); `enabled=False` (library use, tests) reports nothing."""
    return Task(description, total, completed=completed, unit=unit, tag=tag, enabled=enabled)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True,
          unit: str = "") -> Iterator[T]:
    """Iterate with progress; `enabled=False` (library use, tests) iterates silently."""
    if not enabled:
        yield from items
        return
    total = total if total is not None else _length(items)
    with task(description, total, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance()


def _length(items: Iterable[object]) -> int | None:
    try:
        return len(items)  # type: ignore[arg-type]
    except TypeError:
        return None


__all__ = ["PLAIN_INTERVAL", "Task", "bars_enabled", "current_unit", "format_duration", "listeners",
           "progress_columns", "progress_display", "stderr_console", "task", "track", "unit", "unit_labels"]
