"""The interface every generator shares, its registry, and the SyntheticSet writer.

A generator is a small object with a config type and two operations:

    fit(training: Manifest, out: Path, config) -> Path           # a checkpoint folder
    sample(checkpoint: Path, n, out: Path, ...) -> Manifest      # a SyntheticSet

Training images come as a Manifest (one data contract everywhere); the checkpoint folder holds
everything needed to sample, including the resolved config, so a checkpoint alone can be sampled.
A SyntheticSet is a Manifest whose rows are `origin=synthetic`, with the generator, checkpoint,
per-image seed, sampling settings and parents (the training images) recorded for provenance. A model
trained on many images may record its training manifest (a CSV) as the single parent instead;
`Manifest.parent_paths()` expands it into the images it lists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel

from sonosynth.data.images import load_grayscale, save_png
from sonosynth.data.manifest import MANIFEST_FILENAME, Manifest, encode_parents
from sonosynth.errors import SonosynthError


class Generator(Protocol):
    """What the runner and the CLI need from a generator."""

    name: ClassVar[str]
    config_type: ClassVar[type[BaseModel]]
    presets: ClassVar[str]  # the presets file name in sonosynth/presets/ (without .yaml)

    def fit(self, training: Manifest, out: Path, config: BaseModel, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path: ...

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True, **settings: Any) -> Manifest: ...


_REGISTRY: dict[str, Callable[[], Generator]] = {}


def register_generator(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return decorate


def generator_names() -> list[str]:
    _import_builtin_generators()
    return sorted(_REGISTRY)


def create_generator(name: str) -> Generator:
    _import_builtin_generators()
    if name not in _REGISTRY:
        raise SonosynthError(f"unknown generator {name!r}; available: {sorted(_REGISTRY)}.")
    return _REGISTRY[name]()


def _import_builtin_generators() -> None:
    """Generators register themselves on import; import the ones that exist in this install."""
    import importlib

    for module in ("sonosynth.generators.sinddm", "sonosynth.generators.singan", "sonosynth.generators.guided"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not an absent generator
                raise


# ------------------------------------------------------------------------------ training input
@dataclass(frozen=True)
class TrainingImage:
    path: Path  # absolute path of the real image (becomes a `parents` entry)
    image: np.ndarray  # (H, W) uint8 grayscale
    label: str


def load_training_images(training: Manifest) -> list[TrainingImage]:
    if len(training) == 0:
        raise SonosynthError("no training images: the manifest given to fit() is empty.")
    return [
        TrainingImage(path, load_grayscale(path), label)
        for path, label in zip(training.absolute_paths(), training.labels, strict=True)
    ]


def manifest_from_images(paths: Iterable[str | os.PathLike], label: str = "unlabelled") -> Manifest:
    """A manifest for loose image files given on the command line (each its own patient)."""
    rows = []
    paths = [Path(p).resolve() for p in paths]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SonosynthError(f"image file(s) not found: {', '.join(missing)}.")
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path.cwd()
    for path in paths:
        rows.append({"path": os.path.relpath(path, root), "label": label, "patient_id": f"file-{path.stem}",
                     "source": path.name, "frame_index": 0})
    return Manifest.from_rows(rows, root)


def training_manifest(inputs: list[Path], label: str | None = None) -> Manifest:
    """CLI helper: one manifest (csv or folder) or image files -> the training Manifest."""
    if len(inputs) == 1 and (inputs[0].is_dir() or inputs[0].suffix.lower() == ".csv"):
        manifest = Manifest.read(inputs[0])
        return manifest.with_labels([label]) if label else manifest
    return manifest_from_images(inputs, label=label or "unlabelled")


# ------------------------------------------------------------------------------ synthetic output
class SyntheticSetWriter:
    """Writes samples of one checkpoint into `out/` with provenance rows; resumable by seed.

    Re-running with the same seeds skips images already on disk, so an interrupted generation
    continues where it stopped and never writes more than asked.
    """

    def __init__(self, out: str | os.PathLike, generator: str, checkpoint: str | os.PathLike,
                 parents: Iterable[str | os.PathLike], settings: dict[str, Any], label: str,
                 patient_id: str | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.generator = generator
        self.checkpoint = Path(checkpoint)
        self.parents = [Path(p) for p in parents]
        self.settings = json.dumps(settings, sort_keys=True)
        self.label = label
        # Synthetic images inherit no patient; they are grouped by the checkpoint they came from.
        self.patient_id = patient_id or f"synthetic-{generator}-{self.checkpoint.name}"
        self.rows = self._existing_rows()

    def _existing_rows(self) -> dict[str, dict]:
        path = self.out / MANIFEST_FILENAME
        if not path.is_file():
            return {}
        existing = Manifest.read(path, check_files=False)
        rows = {}
        for record in existing.table.astype(object).where(existing.table.notna(), None).to_dict("records"):
            if (self.out / record["path"]).is_file():
                rows[record["path"]] = record
        return rows

    def image_path(self, seed: int) -> str:
        return f"images/{self.label}/{self.generator}_{self.checkpoint.name}_s{seed:07d}.png"

    def missing_seeds(self, seeds: Iterable[int]) -> list[int]:
        return [s for s in seeds if self.image_path(s) not in self.rows]

    def add(self, seed: int, image: np.ndarray) -> None:
        relative = self.image_path(seed)
        save_png(self.out / relative, image)
        self.rows[relative] = {
            "path": relative, "label": self.label, "patient_id": self.patient_id,
            "source": os.path.relpath(self.checkpoint, self.out), "frame_index": 0, "origin": "synthetic",
            "license": None, "generator": self.generator, "checkpoint": os.path.relpath(self.checkpoint, self.out),
            "seed": seed, "parents": encode_parents(self.parents, self.out), "settings": self.settings,
        }

    def flush(self) -> Manifest:
        """Write the manifest (atomically); call after every batch so a crash loses at most one batch."""
        manifest = Manifest.from_rows(list(self.rows.values()), self.out)
        manifest.write()
        return manifest


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Model output in [-1, 1] (N, C, H, W) to (N, H, W) or (N, H, W, C) uint8."""
    array = np.clip((np.asarray(images, dtype=np.float32) + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)


__all__ = [
    "Generator", "SyntheticSetWriter", "TrainingImage", "create_generator", "generator_names",
    "load_training_images", "manifest_from_images", "register_generator", "to_uint8", "training_manifest",
]
