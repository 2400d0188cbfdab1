"""A torch Dataset over a Manifest: grayscale images resized to the classifier's input, with class indices.

Images are decoded once and kept in memory as uint8 at the model's size (64-224 px frames are
small), so later epochs cost only the augmentation. Which rows get augmented is decided per row,
so one pool can augment its real images and leave its synthetic ones as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sonosynth.data.images import UnreadableImage, load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError

Transform = Callable[[torch.Tensor], torch.Tensor]


def class_indices(manifest: Manifest, classes: Sequence[str]) -> np.ndarray:
    """Each row's position in `classes`; a label outside `classes` is an error naming it."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted(set(manifest.labels) - set(index))
    if unknown:
        raise InputDataError(
            f"{manifest.root}: label(s) {unknown} are not among the classifier's classes {list(classes)}; "
            "train on a manifest with those classes or drop the rows."
        )
    return np.array([index[label] for label in manifest.labels], dtype=np.int64)


def load_resized(path, image_size: int) -> np.ndarray:
    """One image as (image_size, image_size) uint8, whatever its stored size."""
    try:
        array = load_grayscale(path)
    except (UnreadableImage, FileNotFoundError) as exc:
        raise InputDataError(f"{path}: cannot read this image ({exc}); fix or remove its manifest row.") from exc
    if array.shape != (image_size, image_size):
        array = np.array(Image.fromarray(array).resize((image_size, image_size), Image.Resampling.BILINEAR))
    # a PIL-backed array is read-only: torch warns on (and must not share) read-only memory
    return np.require(array, requirements=["C_CONTIGUOUS", "WRITEABLE"])


class ManifestDataset(Dataset):
    """(image, class index) pairs: image float (in_channels, S, S) in [0, 1].

    `augment` is a transform applied to the rows where `augment_rows` is true (all rows when it is None).
    """

    def __init__(self, manifest: Manifest, classes: Sequence[str], image_size: int, in_channels: int = 1,
                 augment: Transform | None = None, augment_rows: Sequence[bool] | None = None) -> None:
        if in_channels not in (1, 3):
            raise InputDataError(f"images are read as grayscale; in_channels must be 1 or 3, not {in_channels}.")
        self.manifest = manifest
        self.classes = list(classes)
        self.targets = class_indices(manifest, classes)
        self.paths = manifest.absolute_paths()
        self.image_size = image_size
        self.in_channels = in_channels
        self.augment = augment
        rows = [True] * len(manifest) if augment_rows is None else list(augment_rows)
        if len(rows) != len(manifest):
            raise ValueError(f"augment_rows has {len(rows)} entries for {len(manifest)} images")
        self.augment_rows = rows
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, index: int) -> torch.Tensor:
        """The unaugmented uint8 image (1, S, S), decoded once."""
        cached = self._cache.get(index)
        if cached is None:
            cached = torch.from_numpy(load_resized(self.paths[index], self.image_size)).unsqueeze(0)
            self._cache[index] = cached
        return cached

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image(index).float().div_(255.0)
        if self.augment is not None and self.augment_rows[index]:
            image = self.augment(image).clamp_(0.0, 1.0)
        if self.in_channels == 3:
            image = image.expand(3, -1, -1).contiguous()
        return image, int(self.targets[index])
