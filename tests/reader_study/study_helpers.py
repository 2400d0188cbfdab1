"""Helpers for the reader-study tests: SyntheticSets made from phantom frames, and small studies."""

from __future__ import annotations

from pathlib import Path

from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import SyntheticSetWriter
from sonosynth.reader_study.create import StudyOptions, SyntheticInput, create_study

GENERATORS = ("fakeddm", "fakegan")


def write_synthetic_set(source: Manifest, out: Path, generator: str, count: int, offset: int = 0) -> Manifest:
    """A SyntheticSet whose 'samples' are phantom frames (another seed and size than the real ones)."""
    pneumonia = source.with_labels(["pneumonia"])
    writer = SyntheticSetWriter(out, generator=generator, checkpoint=out / "checkpoint", parents=[],
                                settings={"made_by": "test"}, label="pneumonia")
    for seed, path in enumerate(pneumonia.absolute_paths()[offset:offset + count]):
        writer.add(seed, load_grayscale(path))
    return writer.flush()


def make_study(real: Manifest, synthetic: list[Manifest], out: Path, options: StudyOptions) -> Path:
    create_study(real, [SyntheticInput(m) for m in synthetic], out, options, progress=False)
    return out
