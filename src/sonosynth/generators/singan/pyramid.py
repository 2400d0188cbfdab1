"""The image pyramid: which sizes SinGAN trains at, and resizing between them.

The sizing reproduces the original code exactly (including its rounding), so a given image gets
the same number of scales and the same per-scale shapes as in the reference implementation:
the image is shrunk so its longer side is at most `max_size`, the number of scales is chosen so
the coarsest shorter side is about `min_size` at the nominal factor, and the factor is then
adjusted so the coarsest shorter side is exactly `min_size`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sonosynth.errors import SonosynthError


@dataclass(frozen=True)
class PyramidPlan:
    shapes: tuple[tuple[int, int], ...]  # (height, width) per scale, coarsest first
    scale_factor: float  # the adjusted ratio between consecutive scales (< 1)
    top_scale: float  # how much the image was shrunk before the pyramid (<= 1)

    @property
    def num_scales(self) -> int:
        return len(self.shapes)


def _resized(length: int, factor: float) -> int:
    # The reference resizer's output length for a scale factor.
    return math.ceil(length * factor)


def plan_pyramid(height: int, width: int, scale_factor: float = 0.75, min_size: int = 25,
                 max_size: int = 250) -> PyramidPlan:
    short, long = min(height, width), max(height, width)
    if short <= min_size:
        raise SonosynthError(
            f"image of {height}x{width} px is too small for a SinGAN pyramid: its shorter side must exceed "
            f"min_size={min_size}. Use a larger image or lower min_size (--set min_size=...)."
        )
    num_scales = math.ceil(math.log(math.pow(min_size / short, 1), scale_factor)) + 1
    scales_above_top = math.ceil(math.log(min(max_size, long) / long, scale_factor))
    stop_scale = num_scales - scales_above_top
    top_scale = min(max_size / long, 1)
    top_h, top_w = _resized(height, top_scale), _resized(width, top_scale)
    if stop_scale < 1 or min(top_h, top_w) <= min_size:
        raise SonosynthError(
            f"image of {height}x{width} px shrunk to max_size={max_size} leaves no room for a pyramid above "
            f"min_size={min_size}; raise max_size or lower min_size."
        )
    factor = math.pow(min_size / min(top_h, top_w), 1 / stop_scale)
    shapes = []
    for i in range(stop_scale + 1):
        s = math.pow(factor, stop_scale - i)
        shapes.append((_resized(top_h, s), _resized(top_w, s)))
    return PyramidPlan(tuple(shapes), factor, top_scale)


def resize(image: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of (N, C, H, W) in [-1, 1], antialiased when shrinking, clamped to [-1, 1].

    The clamp mirrors the reference, whose resizer round-trips through 8-bit images.
    """
    if tuple(image.shape[-2:]) == tuple(shape):
        return image.clamp(-1, 1)
    shrinking = shape[0] < image.shape[-2] or shape[1] < image.shape[-1]
    out = F.interpolate(image, size=shape, mode="bicubic", align_corners=False, antialias=shrinking)
    return out.clamp(-1, 1)


def upsample(image: torch.Tensor, shape: tuple[int, int], scale_factor: float) -> torch.Tensor:
    """Bring a scale's output up to the next scale's `shape`.

    As in the reference: enlarge by exactly 1/scale_factor, then crop the top-left `shape`; when a
    requested (arbitrary) output size makes the enlarged image too small, resize to `shape` instead.
    """
    h, w = image.shape[-2:]
    enlarged = resize(image, (_resized(h, 1 / scale_factor), _resized(w, 1 / scale_factor)))
    if enlarged.shape[-2] >= shape[0] and enlarged.shape[-1] >= shape[1]:
        return enlarged[..., : shape[0], : shape[1]]
    return resize(enlarged, shape)


def real_pyramid(image: torch.Tensor, plan: PyramidPlan) -> list[torch.Tensor]:
    """The training image at every scale of the plan, coarsest first."""
    return [resize(image, shape) for shape in plan.shapes]


def scaled_shapes(plan_shapes: tuple[tuple[int, int], ...], size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Per-scale shapes for an output of `size` (height, width): every scale stretched by the same ratios."""
    if size is None:
        return [tuple(s) for s in plan_shapes]
    final_h, final_w = plan_shapes[-1]
    ratio_h, ratio_w = size[0] / final_h, size[1] / final_w
    shapes = [(max(1, round(h * ratio_h)), max(1, round(w * ratio_w))) for h, w in plan_shapes]
    shapes[-1] = (int(size[0]), int(size[1]))
    return shapes
