"""Feature extractors behind one small interface, and batched feature computation.

The metrics receive an extractor and never build one from anything above `metrics`. Offered here: the
fixed random CNN (`random_cnn`; its use and its limit in `random_features.py`) and ImageNet
Inception-v3 (`inception`, the numbers other papers report). A sonosynth classifier's features
(`classifier:CKPT`) come from `sonosynth.classify.features`, which also dispatches all three.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sonosynth.errors import SonosynthError
from sonosynth.hashing import file_sha1
from sonosynth.metrics.quality.images import resize, to_batch
from sonosynth.metrics.quality.random_features import RandomConvFeatures
from sonosynth.progress import track

RANDOM_CNN = "random_cnn"


class FeatureExtractor(Protocol):
    """Images are float (N, 1, H, W) in [0, 1]; the extractor adapts channels and normalises itself."""

    description: str
    fingerprint: str  # hash identifying the weights (recorded in every quality row); "" if unknown
    pooled_size: int  # the side images are resized to before `pooled`

    def spatial(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) features at every position, for SIFID."""
        ...

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) global features, for FID, KID and feature diversity."""
        ...


def create_extractor(features: str | None = None, inception_weights: str | os.PathLike | None = None,
                     device: str | torch.device = "cpu", inception_size: int = 299,
                     allow_download: bool = True) -> FeatureExtractor:
    """`features`: "random_cnn" (the fixed random CNN, seed 0), or None / "inception" (ImageNet Inception-v3)."""
    from sonosynth.metrics.quality import inception

    if features == RANDOM_CNN:
        if inception_weights is not None:
            raise SonosynthError("--inception-weights is for --features inception, not random_cnn.")
        return RandomConvFeatures(device=device)
    if features not in (None, "inception"):
        raise SonosynthError(f"unknown --features {features!r}; use 'random_cnn', 'inception' or "
                             "'classifier:PATH/TO/CHECKPOINT'.")
    if inception_weights is not None:
        path = Path(inception_weights)
        net = inception.inception_from_state_dict(inception.read_inception_state_dict(path), str(path))
        description, fingerprint = f"Inception-v3 ({path.name})", file_sha1(path)[:12]
    else:
        net = inception.torchvision_inception(allow_download=allow_download)
        description, fingerprint = "Inception-v3 (torchvision IMAGENET1K_V1)", "IMAGENET1K_V1"
    return inception.InceptionFeatures(net, pooled_size=inception_size, device=device, description=description,
                                       fingerprint=fingerprint)


def pooled_features(extractor: FeatureExtractor, images: list[np.ndarray], batch_size: int = 16,
                    progress: bool = False, description: str = "features") -> np.ndarray:
    """(N, D) pooled features, each image resized to the extractor's input side first."""
    side = (extractor.pooled_size, extractor.pooled_size)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    out = [
        extractor.pooled(to_batch([resize(image, side) for image in batch])).double().cpu().numpy()
        for batch in track(batches, description, enabled=progress)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0))
