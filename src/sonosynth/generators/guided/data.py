"""Training images as one in-memory tensor in [-1, 1], and the patient-level held-out split of the classifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError, SonosynthError
from sonosynth.generators.base import load_training_image


@dataclass(frozen=True)
class TrainingTensors:
    """What the diffusion stage trains on: the images, or (latent diffusion, latent.py) their scaled latents."""

    images: torch.Tensor  # (N, C, S, S) float32: pixels in [-1, 1], or scaled latents
    labels: torch.Tensor  # (N,) int64 class indices into `classes`
    classes: list[str]
    patients: list[str]
    flipped: torch.Tensor | None = None  # what hflip draws instead of images.flip(-1) (the latents of flipped images)

    def mirrored(self, index: torch.Tensor) -> torch.Tensor:
        """The horizontally flipped training tensors at `index`."""
        return self.flipped[index] if self.flipped is not None else self.images[index].flip(-1)


def resolve_classes(manifest: Manifest, wanted: list[str] | None) -> list[str]:
    """The class list (sorted, the canonical order); every class must have images and there must be two."""
    present = manifest.classes
    classes = sorted(wanted) if wanted else present
    empty = [c for c in classes if c not in present]
    if empty:
        raise InputDataError(f"{manifest.root}: class(es) {empty} have no images in the training manifest "
                             f"(it has {present}); drop them from `classes` or add their images.")
    if len(classes) < 2:
        raise InputDataError(f"{manifest.root}: the guided generator is class-conditional and needs images of at "
                             f"least two classes; this manifest has only {classes}.")
    return classes


def load_image(path, size: int, channels: int) -> np.ndarray:
    """(C, size, size) float32 in 0..255: the shared training-image loader, then a bicubic resize."""
    image = Image.fromarray(load_training_image(path, channels))
    array = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_training_tensors(manifest: Manifest, classes: list[str], size: int, channels: int) -> TrainingTensors:
    subset = manifest.with_labels(classes)
    arrays = [load_image(p, size, channels) for p in subset.absolute_paths()]
    images = torch.from_numpy(np.clip(np.stack(arrays), 0, 255) / 127.5 - 1.0).float()
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[label] for label in subset.labels], dtype=torch.long)
    patients = [str(p) for p in subset.table["patient_id"]]
    return TrainingTensors(images, labels, classes, patients)


def held_out_split(data: TrainingTensors, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices; whole patients are held out, about `fraction` of each class.

    Holding out patients rather than frames keeps near-duplicate video frames from inflating the accuracy.
    A class with a single patient keeps it in training (its accuracy is then not measured).
    """
    if fraction <= 0:
        return np.arange(len(data.labels)), np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    patients = np.asarray(data.patients)
    held = np.zeros(len(labels), dtype=bool)
    for k in range(len(data.classes)):
        in_class = labels == k
        members = np.unique(patients[in_class])
        if len(members) < 2:
            continue
        target = fraction * in_class.sum()
        taken = 0
        for patient in rng.permutation(members):
            if taken >= target:
                break
            rows = in_class & (patients == patient)
            held |= rows
            taken += rows.sum()
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    if len(train) == 0:
        raise SonosynthError("no training images left for the classifier after holding out patients; "
                             "lower classifier.held_out_fraction.")
    return train, test
