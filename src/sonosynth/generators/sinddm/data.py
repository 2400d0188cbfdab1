"""Training images -> the per-scale tensors SinDDM trains on (computed once per fit, never per step)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sonosynth.data.images import UnreadableImage, load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError, SonosynthError
from sonosynth.generators.sinddm.config import SinDDMConfig
from sonosynth.generators.sinddm.pyramid import (
    PyramidPlan,
    blur_levels,
    build_pyramid,
    common_size,
    plan_pyramid,
    resize_to,
)


@dataclass(frozen=True)
class TrainingData:
    """k images at every scale: sharp[s] and blurry[s] are (k, C, H_s, W_s) float tensors in [-1, 1]."""

    sharp: tuple[torch.Tensor, ...]
    blurry: tuple[torch.Tensor, ...]
    plan: PyramidPlan
    blur_levels: tuple[float, ...]
    fingerprint: str  # hash of the 8-bit pyramids: a resumed run must train on the same pixels

    @property
    def n_images(self) -> int:
        return self.sharp[0].shape[0]

    @property
    def n_scales(self) -> int:
        return len(self.sharp)

    def to(self, device: torch.device) -> TrainingData:
        return TrainingData(tuple(x.to(device) for x in self.sharp), tuple(x.to(device) for x in self.blurry),
                            self.plan, self.blur_levels, self.fingerprint)


def load_image(path: Path, channels: int) -> np.ndarray:
    """(H, W) uint8 for grayscale, (H, W, 3) for RGB; a clear error naming the file otherwise."""
    try:
        if channels == 1:
            return load_grayscale(path)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnreadableImage, OSError) as exc:
        raise InputDataError(f"{path}: cannot be read as an image ({exc}); pass PNG/JPEG files or a manifest.") \
            from exc


def load_training_arrays(training: Manifest, channels: int) -> list[np.ndarray]:
    if len(training) == 0:
        raise SonosynthError("no training images: the manifest given to fit() is empty.")
    return [load_image(path, channels) for path in training.absolute_paths()]


def _to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    stacked = np.stack(arrays).astype(np.float32) / 127.5 - 1.0  # (k, H, W, C) in [-1, 1]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def prepare_training_data(images: list[np.ndarray], config: SinDDMConfig) -> TrainingData:
    """Bring the images to one size (FewDDM), plan the pyramid, build every scale and the blur levels."""
    size = common_size([image.shape[:2] for image in images])
    images = [resize_to(image, size) for image in images]
    plan = plan_pyramid(*size, max_pixels=config.max_pixels, scale_step=config.scale_step,
                        coarsest_area=config.coarsest_area, coarsest_min=config.coarsest_min,
                        coarsest_max=config.coarsest_max)
    pyramids = [build_pyramid(image, plan) for image in images]
    levels = blur_levels(pyramids, config.blur_level) if plan.n_scales > 1 else []
    digest = hashlib.sha256()
    for pyramid in pyramids:
        for array in pyramid.sharp:
            digest.update(np.ascontiguousarray(array).tobytes())
    sharp = tuple(_to_tensor([p.sharp[s] for p in pyramids]) for s in range(plan.n_scales))
    blurry = tuple(_to_tensor([p.blurry[s] for p in pyramids]) for s in range(plan.n_scales))
    return TrainingData(sharp, blurry, plan, tuple(levels), digest.hexdigest()[:16])


__all__ = ["TrainingData", "load_image", "load_training_arrays", "prepare_training_data"]
