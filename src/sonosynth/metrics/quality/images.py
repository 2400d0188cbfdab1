"""Images for the metrics: loaded once, as float arrays in [0, 1], resized the same way everywhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sonosynth.data.images import UnreadableImage, load_grayscale
from sonosynth.errors import InputDataError


class ImageStore:
    """Reads each image file once; keeps uint8 (a quarter of float32) since real sets can be large."""

    def __init__(self) -> None:
        self._cache: dict[Path, np.ndarray] = {}

    def get(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W) float32 in [0, 1]."""
        path = Path(path)
        if path not in self._cache:
            if not path.is_file():
                raise InputDataError(f"{path}: image not found. Was the dataset folder moved or the manifest edited?")
            try:
                self._cache[path] = load_grayscale(path)
            except UnreadableImage as exc:
                raise InputDataError(f"{path}: {exc}; remove it from the manifest or replace the file.") from exc
        return self._cache[path].astype(np.float32) / 255.0

    def get_many(self, paths: list[Path]) -> list[np.ndarray]:
        return [self.get(p) for p in paths]


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear with antialiasing (so shrinking does not alias speckle); identity when the shape already fits."""
    if image.shape == tuple(shape):
        return image
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].clamp(0, 1).numpy()


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """Same-size (H, W) arrays -> (N, 1, H, W) float32 tensor."""
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))[:, None]


def random_crops(images: list[np.ndarray], n: int, fraction: float, shape: tuple[int, int],
                 rng: np.random.Generator) -> list[np.ndarray]:
    """`n` crops, each of a random image, with sides `fraction` of that image's, at a random place, resized to `shape`.

    They show how much two views of the training data differ by position alone: the floor a generator's
    samples should clear to be called diverse.
    """
    crops = []
    for _ in range(n):
        image = images[int(rng.integers(len(images)))]
        h, w = image.shape
        ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        crops.append(resize(image[top:top + ch, left:left + cw], shape))
    return crops
