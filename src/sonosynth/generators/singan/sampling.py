"""Sampling a trained SinGAN pyramid (the shared loop in generators/base.py writes the SyntheticSet).

Each image gets its own seed (`seed + i`) and its own noise at every scale, so an image depends
only on its seed and its model, never on the batch it was drawn in or on how many were asked for.
With several models (one per training image), sample i comes from model i mod M: the n images
are dealt round-robin, so every training image contributes floor(n/M) or ceil(n/M) samples, and
each row's `parents` names its own model's training image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sonosynth.generators.singan.cascade import Scale, cascade, draw_noise
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.networks import border
from sonosynth.generators.singan.pyramid import scaled_shapes


@dataclass
class SinGANPyramid:
    """One trained image's frozen pyramid: what `generate` runs."""

    config: SinGANConfig
    scales: list[Scale]
    shapes: tuple[tuple[int, int], ...]
    scale_factor: float
    image: Path
    label: str
    name: str

    @property
    def border(self) -> int:
        return border(self.config.num_layers, self.config.kernel_size)



def generate(model: SinGANPyramid, seeds: list[int], size: tuple[int, int] | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """(len(seeds), C, H, W) samples in [-1, 1]; `size` (height, width) stretches every scale's noise map."""
    shapes = scaled_shapes(model.shapes, size)
    channels = model.config.channels
    per_scale: list[list[torch.Tensor]] = [[] for _ in shapes]
    for seed in seeds:
        rng = torch.Generator().manual_seed(int(seed))
        for k, shape in enumerate(shapes):
            per_scale[k].append(draw_noise(shape, channels, k == 0, rng))
    noises = [torch.cat(maps).to(device) for maps in per_scale]
    with torch.no_grad():
        return cascade(model.scales, shapes, noises, model.scale_factor, model.border)
