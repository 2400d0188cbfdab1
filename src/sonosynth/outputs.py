"""Where a command may write, and what it may delete: the one policy every output folder follows.

Three rules keep the tool from destroying what it did not make:

1. An output folder never equals, contains or lies inside one of the command's inputs
   (`check_output_location`). Writing into the source would, with --overwrite, replace the
   user's files; writing inside it would make a rerun read the output as input.
2. Every folder the tool builds carries a marker file (`OUTPUT_MARKER`, written by
   `mark_output`). Replacing a folder (--overwrite) is allowed only for an empty or a marked
   folder (`check_replaceable`); anything else is the user's and stays untouched.
3. A command that fails removes the folder it created itself (`removed_on_failure`), so a
   failure leaves no half-written output behind; an interruption (Ctrl+C) keeps it for resuming.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from sonosynth.errors import SonosynthError

OUTPUT_MARKER = ".sonosynth-output"
MANIFEST_NAME = "manifest.csv"


class OutputLocationError(SonosynthError):
    """An output folder that would overwrite, contain or sit inside an input, or replace foreign files."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _protected(source: str | os.PathLike) -> Path:
    """The path an input protects: a manifest.csv stands for its dataset folder (paths are relative to it)."""
    path = _resolved(source)
    return path.parent if path.name == MANIFEST_NAME and path.is_file() else path


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(out: str | os.PathLike, sources: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an `out` that equals, contains or lies inside any existing input in `sources`.

    Paths are compared after resolving symlinks, so `--out ./link-to-src` is caught too. Inputs
    that do not exist (or are None) are ignored: they cannot be damaged.
    """
    target = _resolved(out)
    for source in sources:
        if source is None or not Path(source).exists():
            continue
        protected = _protected(source)
        if target == protected:
            raise OutputLocationError(
                f"--out {out} is the input {source} itself; writing there would replace it. Choose another folder.")
        if _is_within(protected, target):
            raise OutputLocationError(
                f"--out {out} contains the input {source}; writing there could replace it. "
                "Choose a folder outside the input.")
        if protected.is_dir() and _is_within(target, protected):
            raise OutputLocationError(
                f"--out {out} lies inside the input folder {source}; a rerun would read the output as input. "
                "Choose a folder outside it.")


def mark_output(folder: str | os.PathLike, kind: str = "") -> None:
    """Record in `folder` that sonosynth wrote it (so --overwrite may later replace it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARKER).write_text(json.dumps({"written_by": "sonosynth", "kind": kind}) + "\n")


def is_marked(folder: str | os.PathLike) -> bool:
    return (Path(folder) / OUTPUT_MARKER).is_file()


def check_replaceable(folder: str | os.PathLike) -> None:
    """Refuse to replace `folder` unless it is missing, empty, or marked as a sonosynth output."""
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise OutputLocationError(f"{folder} is a file, not an output folder; choose another --out.")
    if is_marked(folder) or not any(folder.iterdir()):
        return
    raise OutputLocationError(
        f"{folder} holds files sonosynth did not write (no {OUTPUT_MARKER} marker); --overwrite replaces only "
        "folders sonosynth made. Choose another --out, or delete that folder yourself.")


@contextlib.contextmanager
def removed_on_failure(folder: str | os.PathLike) -> Iterator[Path]:
    """Run a block that writes `folder`; if it raises, remove `folder` when this block created it.

    A folder that existed before the block is left as it is. KeyboardInterrupt keeps the folder
    too: an interrupted command resumes from what it wrote.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        yield folder
    except Exception:
        if created and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        raise


__all__ = [
    "OUTPUT_MARKER",
    "OutputLocationError",
    "check_output_location",
    "check_replaceable",
    "is_marked",
    "mark_output",
    "removed_on_failure",
]
