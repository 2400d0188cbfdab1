"""SIFID (Shaham et al. 2019): Fréchet distance between the internal feature distributions of two images.

Each spatial position of the feature map is one sample, so the statistic compares patch statistics of
one real image with those of one synthetic image; the study averages it over real/synthetic pairs.
"""

from __future__ import annotations

import numpy as np

from sonosynth.errors import InputDataError
from sonosynth.metrics.quality.features import FeatureExtractor
from sonosynth.metrics.quality.frechet import feature_frechet_distance
from sonosynth.metrics.quality.images import resize, to_batch


def sifid(extractor: FeatureExtractor, real: np.ndarray, synthetic: np.ndarray) -> float:
    """SIFID of one pair of (H, W) images in [0, 1]; the synthetic image is resized to the real one's size."""
    synthetic = resize(synthetic, real.shape)
    fmaps = extractor.spatial(to_batch([real, synthetic]))
    if fmaps.shape[-2] * fmaps.shape[-1] < 2:
        raise InputDataError(
            f"images of {real.shape} pixels leave fewer than 2 feature positions for SIFID; use larger images."
        )
    real_vectors, synthetic_vectors = (f.flatten(1).T.double().cpu().numpy() for f in fmaps)
    return feature_frechet_distance(real_vectors, synthetic_vectors)
