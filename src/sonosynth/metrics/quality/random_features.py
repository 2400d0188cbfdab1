"""The fixed feature space for SIFID, FID, KID and feature diversity: a seeded random-weight CNN.

Why this space. A metric whose feature space changes with every fold (each fold's own classifier,
as before) gives numbers that cannot be compared across folds, runs or studies. The candidates:

- ImageNet Inception-v3 (the papers' choice) needs weights this machine cannot download, and its
  features know natural photographs, not speckle. It stays available (`features: inception`).
- A network trained once per study on the real images knows ultrasound, but its numbers still
  differ between studies (and data sets), and it costs a training unit per study (now the default,
  `features: domain`).
- A random-weight CNN, fixed by a seed, is the same function on every machine, fold, run and study,
  needs no download and no training, and is identified by the hash of its weights (recorded in every
  quality row). SIFID is a statistic of local patch (texture) features, and random shallow filter
  banks are known to capture texture statistics well (Ustyuzhaninov et al. 2017, "What does it take
  to generate natural textures?"); Naeem et al. 2020 ("Reliable fidelity and diversity metrics for
  generative models", section 5) show random-initialised embeddings rank generators sensibly where
  ImageNet features do not apply. It is offered here (`features: random_cnn`).

Measured limit, why it is NOT the study default: on POCUS pneumonia (benchmarks/realism.py --quick)
pure-noise samples of an untrained FewDDM scored SIFID 1.6 and 8 dark SinGAN blobs 4.5: a random
filter bank sees speckle-like noise as tissue, and SIFID's Fréchet distance then mostly measures
mean brightness. The studies' default is therefore the feature network trained once per study on
all its real images (`features: domain`, `sonosynth.classify.domain`): one space for every fold and
generator of a study, that knows ultrasound (numbers of two studies still differ); the automatic
reader (`reader.py`), trained per generator and class, caught that noise (AUC 1.0) and is the realism measure.

Network: `stages` conv 3x3 (stride 1) + ReLU + 2x2 average-pool stages, weights drawn once from
N(0, 2 / fan_in) (He init, which keeps activations at a constant scale through ReLUs) with
`torch.Generator().manual_seed(seed)`, biases zero. `spatial` is the feature map after the second
stage (1/4 resolution, like SIFID's early Inception layer); `pooled` concatenates the global mean of
every stage's map (N, sum of widths), so FID/KID see coarse and fine statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch.nn import functional as F

DEFAULT_WIDTHS = (32, 64, 128, 128)
SPATIAL_STAGE = 2


class RandomConvFeatures:
    """The FeatureExtractor over a fixed random CNN (weights from `seed`)."""

    def __init__(self, seed: int = 0, widths: Sequence[int] = DEFAULT_WIDTHS, pooled_size: int = 128,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.pooled_size = int(pooled_size)
        generator = torch.Generator().manual_seed(int(seed))
        self.weights: list[torch.Tensor] = []
        channels = 1
        for width in widths:
            fan_in = channels * 9
            weight = torch.randn(width, channels, 3, 3, generator=generator) * (2.0 / fan_in) ** 0.5
            self.weights.append(weight.to(self.device))
            channels = width
        digest = hashlib.sha1()
        for weight in self.weights:
            digest.update(weight.cpu().numpy().tobytes())
        self.fingerprint = digest.hexdigest()[:12]
        self.description = f"random_cnn (seed {seed}, widths {list(widths)}, sha1 {self.fingerprint})"

    def _stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images.to(self.device, torch.float32).mean(dim=1, keepdim=True) * 2.0 - 1.0
        maps = []
        for weight in self.weights:
            x = F.avg_pool2d(F.relu(F.conv2d(x, weight, padding=1)), 2)
            maps.append(x)
        return maps

    @torch.no_grad()
    def spatial(self, images: torch.Tensor) -> torch.Tensor:
        return self._stages(images)[SPATIAL_STAGE - 1]

    @torch.no_grad()
    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([m.mean(dim=(2, 3)) for m in self._stages(images)], dim=1)
