"""Cheap checks of a batch of images that catch a broken sampler before any learned metric is run."""

from __future__ import annotations

import numpy as np

from sonosynth.metrics.quality.synthetic_utility import neighbour_difference  # noqa: F401 (re-exported)


def saturated_share(images: np.ndarray) -> float:
    """Share of pixels exactly at 0 or 255 (clipping at the sampler's x0 bound shows up here)."""
    array = np.asarray(images)
    return float(((array <= 0) | (array >= 255)).mean())
