"""Training images -> the per-scale tensors SinDDM trains on (computed once per fit, never per step)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

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


__all__ = ["TrainingData", "prepare_training_data"]
