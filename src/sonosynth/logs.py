"""Logging for the whole package: one setup, a rich handler on a terminal, plain timestamped lines otherwise.

Every module logs through `logging.getLogger(__name__)` (all under the `sonosynth` logger); the CLI
calls `configure()` once with the verbosity of `-v` / `-q`. A study adds `run_log(run_dir)`: a file
handler writing `run_dir/run.log` with every message, and a mirror of the tables the console
prints, so the run folder keeps what the console showed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

ROOT = "sonosynth"
RUN_LOG_NAME = "run.log"
PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

stderr_console = Console(stderr=True)
_handler: logging.Handler | None = None
_worker = False  # a worker process of a study: plain lines only, even on a terminal


class CurrentStderrHandler(logging.StreamHandler):
    """Plain lines on whatever `sys.stderr` is when a message is written (test runners and tools swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def level_for(verbosity: int) -> int:
    """-q (verbosity -1): warnings and errors; default 0: info; -v (1 or more): debug."""
    if verbosity < 0:
        return logging.WARNING
    return logging.DEBUG if verbosity > 0 else logging.INFO


def interactive() -> bool:
    """True when stderr is a terminal (rich bars and colours); False when piped to a file or a scheduler."""
    return stderr_console.is_terminal and not _worker


def configure(verbosity: int = 0, *, plain: bool | None = None) -> None:
    """Install the console handler on the `sonosynth` logger (idempotent; a second call resets the level).

    `plain=None` chooses by the terminal: rich on a terminal, `PLAIN_FORMAT` lines otherwise, so a log
    file read later has a timestamp on every line and nothing wrapped at 80 columns.
    """
    global _handler
    logger = logging.getLogger(ROOT)
    if _handler is not None:
        logger.removeHandler(_handler)
    use_plain = not interactive() if plain is None else plain
    if use_plain:
        handler: logging.Handler = CurrentStderrHandler()
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, DATE_FORMAT))
    else:
        handler = RichHandler(console=stderr_console, show_path=False, markup=False, rich_tracebacks=False,
                              log_time_format="%H:%M:%S")
    handler.setLevel(level_for(verbosity))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    _handler = handler


def configure_worker(level: int, run_log_path: str | Path | None) -> None:
    """Logging in a study's worker process: plain lines on stderr, and appended to the run's `run.log`."""
    global _worker
    _worker = True
    configure(0, plain=True)
    assert _handler is not None
    _handler.setLevel(level)
    if run_log_path is not None:
        handler = logging.FileHandler(run_log_path, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, DATE_FORMAT))
        logging.getLogger(ROOT).addHandler(handler)


def console_level() -> int:
    """The level the console shows (INFO when `configure` was never called, as in library use)."""
    return _handler.level if _handler is not None else logging.INFO


def _ensure_configured() -> None:
    # Library use without the CLI: messages still reach stderr once, plainly.
    if _handler is None:
        configure(0, plain=True)


@contextlib.contextmanager
def run_log(run_dir: str | Path) -> Iterator[Path]:
    """Append every message (debug included) and every printed table to `run_dir/run.log` while inside."""
    from sonosynth import console as console_module

    _ensure_configured()
    path = Path(run_dir) / RUN_LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, DATE_FORMAT))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger(ROOT)
    logger.addHandler(handler)
    mirror = Console(file=handler.stream, width=180, no_color=True, force_terminal=False, soft_wrap=False)
    console_module.mirrors.append(mirror)
    try:
        yield path
    finally:
        console_module.mirrors.remove(mirror)
        logger.removeHandler(handler)
        handler.close()


__all__ = ["PLAIN_FORMAT", "ROOT", "RUN_LOG_NAME", "configure", "configure_worker", "console_level", "interactive", "level_for",
           "run_log", "stderr_console"]
