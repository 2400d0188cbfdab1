"""Running a stack of trained scales coarse to fine: SinGAN's generation and reconstruction paths.

Pure tensor functions (no I/O, no global RNG): every random draw comes from an explicit
`torch.Generator`, so training, resuming and sampling are reproducible from a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sonosynth.generators.singan.networks import ScaleGenerator
from sonosynth.generators.singan.pyramid import upsample


@dataclass
class Scale:
    """One trained (frozen) scale of a SinGAN."""

    generator: ScaleGenerator
    noise_amp: float  # std of the noise added at this scale
    z_rec: torch.Tensor  # (1, C, h, w): reconstruction noise; a fixed draw at the coarsest scale, zeros above
    shape: tuple[int, int]  # the training image's (h, w) at this scale


def draw_noise(shape: Sequence[int], channels: int, coarsest: bool, rng: torch.Generator, batch: int = 1,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian noise (batch, channels, h, w).

    At the coarsest scale one noise plane is shared by all colour channels (as in the reference),
    which keeps the purely generative scale from inventing colour noise; above it each channel is independent.
    """
    planes = 1 if coarsest else channels
    noise = torch.randn(batch, planes, int(shape[0]), int(shape[1]), generator=rng)
    return noise.expand(batch, channels, int(shape[0]), int(shape[1])).contiguous().to(device)


def pad(image: torch.Tensor, border: int) -> torch.Tensor:
    return F.pad(image, [border] * 4)


def run_scale(scale: Scale | ScaleGenerator, noise_amp: float, noise: torch.Tensor, previous: torch.Tensor,
              border: int) -> torch.Tensor:
    """One generator step: previous image + residual(noise_amp * noise + previous), zero-padded inputs."""
    generator = scale.generator if isinstance(scale, Scale) else scale
    padded_previous = pad(previous, border)
    return generator(noise_amp * pad(noise, border) + padded_previous, padded_previous)


def cascade(scales: Sequence[Scale], shapes: Sequence[tuple[int, int]], noises: Sequence[torch.Tensor],
            scale_factor: float, border: int) -> torch.Tensor:
    """The image at the finest of `scales`, given one noise map per scale at the matching `shapes`."""
    previous = torch.zeros_like(noises[0])
    for k, scale in enumerate(scales):
        if k:
            previous = upsample(previous, shapes[k], scale_factor)
        previous = run_scale(scale, scale.noise_amp, noises[k], previous, border)
    return previous


def random_input(scales: Sequence[Scale], shapes: Sequence[tuple[int, int]], target: tuple[int, int],
                 channels: int, scale_factor: float, border: int, rng: torch.Generator,
                 device: torch.device | str) -> torch.Tensor:
    """A random sample of the lower scales, upsampled to `target`: the next scale's 'previous' input."""
    noises = [draw_noise(shapes[k], channels, k == 0, rng, device=device) for k in range(len(scales))]
    with torch.no_grad():
        image = cascade(scales, shapes, noises, scale_factor, border)
    return upsample(image, target, scale_factor)


def reconstruction_input(scales: Sequence[Scale], target: tuple[int, int], scale_factor: float,
                         border: int) -> torch.Tensor:
    """The lower scales' reconstruction of the training image (fixed noise), upsampled to `target`."""
    with torch.no_grad():
        image = cascade(scales, [s.shape for s in scales], [s.z_rec for s in scales], scale_factor, border)
    return upsample(image, target, scale_factor)
