"""A sonosynth classifier as a quality feature space (`features: classifier:CKPT`), and the one place
that turns a `--features` choice into a FeatureExtractor.

It lives in `classify` because it loads classifier checkpoints; `metrics.quality` only receives the
extractor and imports nothing above it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from sonosynth.classify.checkpoint import load_classifier
from sonosynth.errors import SonosynthError
from sonosynth.hashing import file_sha1
from sonosynth.metrics.quality.features import FeatureExtractor, create_extractor

CLASSIFIER_PREFIX = "classifier:"


class ClassifierFeatures:
    """The FeatureExtractor over a sonosynth classifier (its `feature_map` and `embed`)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", description: str = "classifier",
                 fingerprint: str = "") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pooled_size = int(model.image_size)
        self.description = description
        self.fingerprint = fingerprint

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, torch.float32)
        if images.shape[-2:] != (self.pooled_size, self.pooled_size):
            # The classifier learned at its own input size; features at another scale would not be comparable.
            images = F.interpolate(images, size=(self.pooled_size, self.pooled_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        channels = int(self.model.in_channels)
        if images.shape[1] != channels:
            if channels == 3 and images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            elif channels == 1:
                images = images.mean(dim=1, keepdim=True)
            else:
                raise SonosynthError(f"the classifier expects {channels} input channels; images have {images.shape[1]}.")
        return images

    @torch.no_grad()
    def spatial(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.feature_map(self._prepare(images))

    @torch.no_grad()
    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(self._prepare(images))


def classifier_features(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> ClassifierFeatures:
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise SonosynthError(f"{checkpoint}: classifier checkpoint not found (--features classifier:CKPT).")
    model, _classes = load_classifier(checkpoint)
    name = getattr(model, "name", type(model).__name__)
    fingerprint = file_sha1(checkpoint)[:12] if checkpoint.is_file() else ""
    return ClassifierFeatures(model, device, description=f"classifier {name} ({checkpoint})", fingerprint=fingerprint)


def feature_extractor(features: str | None = None, inception_weights: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", inception_size: int = 299,
                      allow_download: bool = True) -> FeatureExtractor:
    """`features`: "random_cnn" (the fixed space), None or "inception" (ImageNet Inception-v3), or "classifier:CKPT"."""
    if features is not None and features.startswith(CLASSIFIER_PREFIX):
        if inception_weights is not None:
            raise SonosynthError("give either --inception-weights or --features classifier:CKPT, not both.")
        return classifier_features(features[len(CLASSIFIER_PREFIX):], device)
    return create_extractor(features, inception_weights, device, inception_size, allow_download)
