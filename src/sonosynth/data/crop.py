"""Cropping a scanner screen to its ultrasound content and to a standard square.

Web-sourced clips come with black margins, scale bars and text overlays. The ultrasound
sector is the largest bright connected region once the image is smoothed; text and tick marks
are small separate blobs, so keeping only the largest region drops them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    top: int
    bottom: int  # exclusive
    left: int
    right: int  # exclusive

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def apply(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.bottom, self.left : self.right]


def content_box(gray: np.ndarray, threshold: float = 12.0, smoothing: int = 9, margin: int = 2) -> Box:
    """Bounding box of the ultrasound content in a (H, W) image (uint8 scale).

    Pass the mean of a clip's frames to get one stable box per clip. Falls back to the whole
    image when nothing stands out from the background (e.g. an already cropped, bright image).
    """
    height, width = gray.shape
    smooth = ndimage.uniform_filter(gray.astype(np.float32), size=smoothing)
    mask = smooth > threshold
    # Thin overlays (text, calipers) touch the sector only through a few pixels; opening cuts them off.
    mask = ndimage.binary_opening(mask, structure=np.ones((5, 5), bool))
    regions, count = ndimage.label(mask)
    if count == 0:
        return Box(0, height, 0, width)
    sizes = ndimage.sum_labels(mask, regions, index=np.arange(1, count + 1))
    largest = int(np.argmax(sizes)) + 1
    if sizes[largest - 1] < 0.02 * height * width:
        return Box(0, height, 0, width)
    # Smoothing bleeds the region a few pixels outward; the box follows the unsmoothed pixels inside it.
    tight = (regions == largest) & (gray > threshold)
    if not tight.any():
        tight = regions == largest
    rows = np.flatnonzero(tight.any(axis=1))
    cols = np.flatnonzero(tight.any(axis=0))
    return Box(
        max(0, int(rows[0]) - margin),
        min(height, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(width, int(cols[-1]) + 1 + margin),
    )


def to_square(gray: np.ndarray, size: int, fit: str = "pad") -> np.ndarray:
    """`pad`: pad with black to a centred square (nothing of the sector is cut, the aspect kept), then resize
    to size x size; `stretch`: resize straight to size x size (the fetal study's 128 x 128 resize).

    Lanczos resampling keeps speckle sharp when shrinking; it also handles upscaling of small images.
    """
    if fit == "stretch":
        if gray.shape == (size, size):
            return gray
        return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
    if fit != "pad":
        raise ValueError(f"fit must be pad or stretch, got {fit!r}")
    height, width = gray.shape
    side = max(height, width)
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = gray
    if side == size:
        return canvas
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)
