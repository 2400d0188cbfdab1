"""TensorBoard event files for a study's units (the optional extra `sonosynth[tensorboard]`).

Inside `events(folder)` the progress reports of every loop (generator and classifier losses,
learning rates) are written as scalars, and sample grids as images, into `folder`, so
`tensorboard --logdir runs/` shows a study's training as researchers expect. Without the
`tensorboard` package nothing is written and one line says so; nothing else changes.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
EVENTS_FOLDER = "tensorboard"
_writers: list[object | None] = []
_noted = False


def _summary_writer(folder: Path) -> object | None:
    global _noted
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError naming the missing `tensorboard` package
        if not _noted:
            log.info("TensorBoard event files skipped: the tensorboard package is not installed "
                     "(pip install 'sonosynth[tensorboard]').")
            _noted = True
        return None
    return SummaryWriter(log_dir=str(folder), flush_secs=30)


def unit_folder(run_dir: str | Path, description: str) -> Path:
    """`run_dir/tensorboard/<description as a folder name>`: one TensorBoard run per study unit."""
    name = re.sub(r"[^A-Za-z0-9.+=-]+", "_", description).strip("_") or "unit"
    return Path(run_dir) / EVENTS_FOLDER / name


@contextlib.contextmanager
def events(folder: str | Path | None) -> Iterator[object | None]:
    """Scalars and images reported inside go to event files in `folder` (None: nowhere)."""
    writer = _summary_writer(Path(folder)) if folder is not None else None
    _writers.append(writer)
    try:
        yield writer
    finally:
        _writers.pop()
        if writer is not None:
            writer.close()


def active() -> bool:
    return bool(_writers) and _writers[-1] is not None


def scalars(values: dict[str, float], step: int, prefix: str | None = None) -> None:
    if not active():
        return
    writer = _writers[-1]
    for name, value in values.items():
        writer.add_scalar(f"{prefix}/{name}" if prefix else name, value, global_step=step)


def image(tag: str, array: np.ndarray, step: int = 0) -> None:
    """An (H, W) grayscale or (H, W, 3) uint8 image, e.g. a grid of samples."""
    if not active():
        return
    dataformats = "HW" if array.ndim == 2 else "HWC"
    _writers[-1].add_image(tag, array, global_step=step, dataformats=dataformats)


__all__ = ["EVENTS_FOLDER", "active", "events", "image", "scalars", "unit_folder"]
