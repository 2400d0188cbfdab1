"""The image pyramid SinDDM trains on: scale sizes, Lanczos scales, blurry upsamplings, blur levels.

Built once per fit (never per step). The rules follow the official `create_img_scales`:

* the finest scale is the image shrunk (never enlarged) to at most `max_pixels` pixels (50,000);
* the coarsest side is round(sqrt(3110 * short / long)) clamped to 42..55 px (3110 px^2 is about 2.5x the
  area of the denoiser's receptive field);
* the number of scales is the rounded log of finest/coarsest short side in steps of 1.411, plus one,
  and the step is then re-fitted so the coarsest side is hit exactly (560^2 -> 55, 78, 111, 157, 223);
* each scale is a Lanczos resize of the ORIGINAL image (not of the next finer scale);
* the blurry version of scale s is a bilinear upsampling of scale s-1 (8-bit, as the official code
  stores it as PNG);
* the blur level of scale s is ||x^s - blurry^s||_2 / (number of values), on 8-bit values.

The official code subtracts the two 8-bit arrays with numpy, so negative differences wrap around to
large positive ones (e.g. -3 becomes 253) and the levels come out 10-40x larger than the true
difference (1.095 / 0.761 / 0.531 / 0.373 for a 560^2 ultrasound image instead of ~0.03). The sampler's
start steps (52 / 40 / 30 / 22 there) and the blur mixing depend on those values, so the study's
model is the wrapped one: `blur_level="official"` (default) reproduces it, `"float"` computes the
signed difference the formula intends. The official code also reads every image as RGB, so for a
grayscale image the official level is computed on its three identical channels (this divides the
level by sqrt(3) relative to one channel, as the study's RGB-encoded JPEGs did).

Sonosynth fixes one failure of the official code: an image whose short side is below ~65 px gives a
single scale there and a division by zero; here it is a valid one-scale pyramid (plain DDPM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from sonosynth.errors import SonosynthError

BlurLevelMode = Literal["official", "float"]


@dataclass(frozen=True)
class PyramidPlan:
    """Scale sizes (height, width), coarsest first, and the re-fitted step between them."""

    sizes: tuple[tuple[int, int], ...]
    scale_step: float

    @property
    def n_scales(self) -> int:
        return len(self.sizes)


def capped_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """Shrink to at most `max_pixels` keeping the aspect ratio (truncating, as the official code)."""
    scaler = math.sqrt(height * width / max_pixels)
    if scaler > 1:
        return int(height / scaler), int(width / scaler)
    return height, width


def coarsest_side(height: int, width: int, area: float = 3110, lo: int = 42, hi: int = 55) -> int:
    short, long = min(height, width), max(height, width)
    return int(min(hi, max(lo, round(math.sqrt(area * short / long)))))


def plan_pyramid(height: int, width: int, *, max_pixels: int = 50_000, scale_step: float = 1.411,
                 coarsest_area: float = 3110, coarsest_min: int = 42, coarsest_max: int = 55) -> PyramidPlan:
    """Scale sizes for an image of `height` x `width` pixels (the sizes the official code trains on)."""
    if height < 1 or width < 1:
        raise SonosynthError(f"image of size {height}x{width} cannot be trained on.")
    height, width = capped_size(height, width, max_pixels)
    short = min(height, width)
    coarse = coarsest_side(height, width, coarsest_area, coarsest_min, coarsest_max)
    ratio = math.log(short / coarse) if short > coarse else 0.0
    n_scales = max(1, round(ratio / math.log(scale_step)) + 1)
    if n_scales == 1:
        return PyramidPlan(sizes=((height, width),), scale_step=1.0)
    step = math.exp(ratio / (n_scales - 1))
    sizes = []
    for i in range(n_scales):
        factor = step ** (n_scales - i - 1)
        sizes.append((round(height / factor), round(width / factor)))
    return PyramidPlan(sizes=tuple(sizes), scale_step=step)


@dataclass(frozen=True)
class ImagePyramid:
    """One training image at every scale: sharp and blurry 8-bit arrays (H, W, C), coarsest first."""

    sharp: tuple[np.ndarray, ...]
    blurry: tuple[np.ndarray, ...]  # blurry[0] is sharp[0]: the coarsest scale has no blurry version

    @property
    def n_scales(self) -> int:
        return len(self.sharp)


def _pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _array(image: Image.Image, channels: int) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array[..., :channels]


def build_pyramid(image: np.ndarray, plan: PyramidPlan) -> ImagePyramid:
    """Resize an (H, W) or (H, W, C) uint8 image to every scale of `plan`."""
    image = image[..., None] if image.ndim == 2 else image
    channels = image.shape[-1]
    original = _pil(image)
    sharp = [_array(original.resize((w, h), Image.Resampling.LANCZOS), channels) for h, w in plan.sizes]
    blurry = [sharp[0]]
    for s in range(1, plan.n_scales):
        h, w = plan.sizes[s]
        blurry.append(_array(_pil(sharp[s - 1]).resize((w, h), Image.Resampling.BILINEAR), channels))
    return ImagePyramid(sharp=tuple(sharp), blurry=tuple(blurry))


def blur_level(sharp: np.ndarray, blurry: np.ndarray, mode: BlurLevelMode = "official") -> float:
    """||sharp - blurry|| / size on 8-bit values; `official` reproduces the uint8 wrap-around (see module doc)."""
    if mode == "official":
        if sharp.shape[-1] == 1:  # the official code sees grayscale as three identical RGB channels
            sharp, blurry = np.repeat(sharp, 3, axis=-1), np.repeat(blurry, 3, axis=-1)
        difference = np.subtract(sharp.astype(np.uint8), blurry.astype(np.uint8)).astype(np.float64)
    elif mode == "float":
        difference = sharp.astype(np.float64) - blurry.astype(np.float64)
    else:
        raise SonosynthError(f"unknown blur_level mode {mode!r}; use 'official' or 'float'.")
    return float(np.linalg.norm(difference.ravel()) / difference.size)


def blur_levels(pyramids: list[ImagePyramid], mode: BlurLevelMode = "official") -> list[float]:
    """One level per finer scale; with several images (FewDDM) the mean level over the images.

    The gamma schedule and the start steps are shared by all images of one model, so they need one
    level per scale; the mean keeps a single image's levels unchanged.
    """
    n_scales = pyramids[0].n_scales
    return [float(np.mean([blur_level(p.sharp[s], p.blurry[s], mode) for p in pyramids])) for s in range(1, n_scales)]


def common_size(shapes: list[tuple[int, int]]) -> tuple[int, int]:
    """The size several training images (FewDDM) are brought to: the median height and width.

    The median keeps a typical image's resolution and aspect ratio; one odd image cannot stretch the rest.
    """
    heights = sorted(h for h, _ in shapes)
    widths = sorted(w for _, w in shapes)
    return heights[len(heights) // 2], widths[len(widths) // 2]


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of an (H, W[, C]) uint8 image to (height, width); a no-op when already that size."""
    if image.shape[:2] == tuple(size):
        return image
    resized = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.LANCZOS), dtype=np.uint8)
    return resized


__all__ = [
    "BlurLevelMode", "ImagePyramid", "PyramidPlan", "blur_level", "blur_levels", "build_pyramid", "capped_size",
    "coarsest_side", "common_size", "plan_pyramid", "resize_to",
]
