"""Feature extractors behind one small interface, and batched feature computation.

Two feature spaces are offered: ImageNet Inception-v3 (the numbers other papers report) and a sonosynth
classifier (`classifier:CKPT`), whose features know what lung ultrasound looks like and need no download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from sonosynth.errors import SonosynthError
from sonosynth.metrics.quality.images import resize, to_batch
from sonosynth.progress import track


class FeatureExtractor(Protocol):
    """Images are float (N, 1, H, W) in [0, 1]; the extractor adapts channels and normalises itself."""

    description: str
    pooled_size: int  # the side images are resized to before `pooled`

    def spatial(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) features at every position, for SIFID."""
        ...

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) global features, for FID, KID and feature diversity."""
        ...


class ClassifierFeatures:
    """The FeatureExtractor over a sonosynth classifier (its `feature_map` and `embed`)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", description: str = "classifier"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pooled_size = int(model.image_size)
        self.description = description

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
    try:
        from sonosynth.classify import load_classifier
    except ImportError as exc:
        raise SonosynthError(f"--features classifier:CKPT needs sonosynth.classify, which is not available ({exc}).") \
            from exc
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise SonosynthError(f"{checkpoint}: classifier checkpoint not found (--features classifier:CKPT).")
    model, _classes = load_classifier(checkpoint)
    name = getattr(model, "name", type(model).__name__)
    return ClassifierFeatures(model, device, description=f"classifier {name} ({checkpoint})")


def create_extractor(features: str | None = None, inception_weights: str | os.PathLike | None = None,
                     device: str | torch.device = "cpu", inception_size: int = 299,
                     allow_download: bool = True) -> FeatureExtractor:
    """`features`: None or "inception" (ImageNet Inception-v3), or "classifier:CKPT"."""
    from sonosynth.metrics.quality import inception

    if features is not None and features.startswith("classifier:"):
        if inception_weights is not None:
            raise SonosynthError("give either --inception-weights or --features classifier:CKPT, not both.")
        return classifier_features(features.split(":", 1)[1], device)
    if features not in (None, "inception"):
        raise SonosynthError(f"unknown --features {features!r}; use 'inception' or 'classifier:PATH/TO/CHECKPOINT'.")
    if inception_weights is not None:
        path = Path(inception_weights)
        net = inception.inception_from_state_dict(inception.read_inception_state_dict(path), str(path))
        description = f"Inception-v3 ({path.name})"
    else:
        net = inception.torchvision_inception(allow_download=allow_download)
        description = "Inception-v3 (torchvision IMAGENET1K_V1)"
    return inception.InceptionFeatures(net, pooled_size=inception_size, device=device, description=description)


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
