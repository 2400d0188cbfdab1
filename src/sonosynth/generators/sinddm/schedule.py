"""The diffusion schedule of SinDDM as pure math: cosine alphas, noise-to-signal sigma, blur weights gamma.

Everything here is a function of numbers in, arrays out; the trainer and sampler only index it.
Indices follow the official code: t runs over 0..T-1 and `alpha_bar[t]` is the signal level after
step t (so t = 0 is already slightly noisy, as in every DDPM implementation derived from
lucidrains/denoising-diffusion-pytorch, which SinDDM's code is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def cosine_betas(timesteps: int, offset: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule exactly as SinDDM's code evaluates it.

    The official code samples the cosine on `linspace(0, T+1, T+1)` (not `0..T`), so its betas differ
    slightly from the paper's formula; we keep that grid so alpha_bar, sigma and the start steps match.
    """
    steps = timesteps + 1
    grid = np.linspace(0, steps, steps, dtype=np.float64)
    alpha_bar = np.cos(((grid / steps) + offset) / (1 + offset) * np.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)


@dataclass(frozen=True)
class Schedule:
    """Per-timestep constants (float64 numpy, length T) shared by every scale."""

    betas: np.ndarray
    alpha_bar: np.ndarray

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @property
    def sigma(self) -> np.ndarray:
        """Noise-to-signal ratio sqrt((1 - alpha_bar) / alpha_bar): compared with the blur levels."""
        return np.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar with the convention alpha_bar[-1] = 1 (a clean image), used by the final step."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])


def make_schedule(timesteps: int = 100) -> Schedule:
    betas = cosine_betas(timesteps)
    return Schedule(betas=betas, alpha_bar=np.cumprod(1.0 - betas))


def blur_gammas(schedule: Schedule, blur_levels: Sequence[float]) -> np.ndarray:
    """gamma[s, t] = clamp(sigma_t / level_s, 0, 1); row 0 (the coarsest scale) is all zeros (no blur).

    While the noise is stronger than the blur (sigma_t > level), the blurry image alone is the target;
    as the noise fades the target moves linearly to the sharp image.
    """
    gammas = np.zeros((len(blur_levels) + 1, schedule.timesteps))
    for s, level in enumerate(blur_levels, start=1):
        gammas[s] = np.clip(schedule.sigma / level, 0.0, 1.0)
    return gammas


def start_steps(schedule: Schedule, blur_levels: Sequence[float]) -> list[int]:
    """Where sampling starts at each scale: T at the coarsest, then the first t with sigma_t > level_s.

    This is numpy's `argmax(sigma > level)` as in the official code, including its corner case: if no
    sigma exceeds the level the result is 0 (the scale is then passed through without denoising).
    """
    return [schedule.timesteps] + [int(np.argmax(schedule.sigma > level)) for level in blur_levels]


def sampling_timesteps(start: int, stride: int = 1) -> list[int]:
    """The t values visited when denoising from `start` (exclusive) down to 0 (inclusive).

    stride 1 is the official schedule (start-1, ..., 0). A larger stride keeps about start/stride
    evenly spaced steps, always including start-1 and 0, as in DDIM/respaced DDPM sampling.
    """
    if start <= 0:
        return []
    count = max(1, int(np.ceil(start / max(1, stride))))
    if count == 1:
        return [0] if start == 1 else [start - 1, 0]
    ts = np.unique(np.round(np.linspace(0, start - 1, count)).astype(int))
    return [int(t) for t in ts[::-1]]


__all__ = ["Schedule", "blur_gammas", "cosine_betas", "make_schedule", "sampling_timesteps", "start_steps"]
