"""Two cheap realism numbers of a synthetic set: neighbour-difference energy and the CAS ratio.

Neighbour-difference energy (a texture check that needs no learned model). For images x of side
H x W on the 0..255 scale,

    E = ( mean_{i, j} |x[i, j+1] - x[i, j]|  +  mean_{i, j} |x[i+1, j] - x[i, j]| ) / 2,

the mean absolute difference between horizontally and vertically adjacent pixels (each mean over
every image of the batch). Speckle-free smooth ultrasound scores a few units (real POCUS frames at
64 px: about 8), independent uniform noise 255 / 3 = 85; a sampler that leaves per-pixel noise in its
samples shows up as a value far above the real images' (issue #15: 104 against 8.1).

Classification accuracy score (CAS; Ravuri & Vinyals 2019, "Classification accuracy score for
conditional generative models"), here as a ratio so it reads without knowing how hard the task is:

    CAS = BA(classifier trained on synthetic images only) / BA(same classifier trained on the real training side),

both balanced accuracies (mean per-class recall) measured on the same held-out real patients, which
neither the generator nor either classifier saw. 1 means the synthetic images teach the classes as
well as the real ones they were generated from; 1 / (number of classes) over the real BA means the
synthetic set teaches nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neighbour_difference(images: np.ndarray) -> float:
    """E above: `images` uint8 or float on 0..255, shaped (N, H, W) or (N, H, W, C)."""
    array = np.asarray(images, dtype=np.float64)
    if array.ndim < 3:
        raise ValueError(f"neighbour_difference needs a batch (N, H, W[, C]); got shape {array.shape}")
    across = np.abs(np.diff(array, axis=2)).mean()
    down = np.abs(np.diff(array, axis=1)).mean()
    return float((across + down) / 2)


def balanced_accuracy(targets: Sequence[int], predictions: Sequence[int]) -> float:
    """Mean over the classes present in `targets` of the share of that class predicted correctly."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    if len(targets) == 0 or len(targets) != len(predictions):
        raise ValueError(f"need equally many targets and predictions (got {len(targets)} and {len(predictions)})")
    return float(np.mean([(predictions[targets == k] == k).mean() for k in np.unique(targets)]))


def cas_ratio(synthetic_balanced_accuracy: float, real_balanced_accuracy: float) -> float:
    """CAS = BA_synthetic / BA_real (NaN when the real-trained classifier scored 0)."""
    if not real_balanced_accuracy > 0:
        return float("nan")
    return float(synthetic_balanced_accuracy / real_balanced_accuracy)


__all__ = ["balanced_accuracy", "cas_ratio", "neighbour_difference"]
