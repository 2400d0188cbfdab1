"""Crash-safe writes: every file appears complete or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the same directory so the final rename is atomic on POSIX.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_csv_atomic(table, target: str | os.PathLike, index: bool = False) -> None:
    """Write a pandas table as CSV so that `target` holds the whole table or its previous content."""
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=index)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove what interrupted builds of `target` left beside it; return the folders removed.

    A staging folder is `.NAME.PID-XXXX.partial` (or `.NAME.old-PID` while an old output is
    swapped out). One whose process is gone (killed, crashed, power loss) is stale. Folders of a
    process that still runs are left alone, and so is anything without the output marker: the
    tool removes only what it wrote.
    """
    from sonosynth.outputs import is_marked

    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(?:(\d+)-[^.]+\.partial|old-(\d+))$")
    removed = []
    for candidate in target.parent.iterdir():
        match = pattern.match(candidate.name)
        if not match or not candidate.is_dir() or candidate.is_symlink():
            continue
        pid = int(match.group(1) or match.group(2))
        if pid != os.getpid() and _pid_alive(pid):
            continue
        if is_marked(candidate) or not any(candidate.iterdir()):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, kind: str = "") -> Iterator[Path]:
    """Build a whole output folder under a temporary sibling and move it into place at the end.

    If the block fails, the partial folder is removed and `target` is untouched, so a crash never
    leaves a half-written dataset; a build killed outright leaves its partial folder, which the next
    build of the same `target` removes. The new folder carries the output marker; an existing
    `target` is replaced only after the new one is complete, and only if it is empty or marked as a
    sonosynth output (anything else raises OutputLocationError before any work).
    """
    from sonosynth.outputs import check_replaceable, mark_output

    target = Path(target)
    check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}-", suffix=".partial", dir=target.parent))
    try:
        mark_output(staging, kind)
        yield staging
        mark_output(staging, kind)  # the block may have rebuilt the folder's contents
        if target.exists():
            check_replaceable(target)
            trash = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
