"""Cheap checks of a batch of images that catch a broken sampler before any learned metric is run."""

from __future__ import annotations

import numpy as np


def neighbour_difference(images: np.ndarray) -> float:
    """Mean absolute difference between horizontally and vertically neighbouring pixels, in 0..255 units.

    `images` is uint8 or float in 0..255, shaped (N, H, W) or (N, H, W, C). Independent uniform noise
    scores 255 / 3 = 85; a smooth image scores a few units.
    """
    array = np.asarray(images, dtype=np.float64)
    across = np.abs(np.diff(array, axis=2)).mean()
    down = np.abs(np.diff(array, axis=1)).mean()
    return float((across + down) / 2)


def saturated_share(images: np.ndarray) -> float:
    """Share of pixels exactly at 0 or 255 (clipping at the sampler's x0 bound shows up here)."""
    array = np.asarray(images)
    return float(((array <= 0) | (array >= 255)).mean())
