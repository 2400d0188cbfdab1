"""Sampling a trained SinDDM: coarse-to-fine, as the official `sample_scales` does (without autograd).

Coarsest scale: ancestral DDPM from pure noise over all T steps, x_0 estimates clamped to [-1, 1].
Each finer scale s: the previous sample, bilinearly upsampled, is the blurry image x~; it is noised to
the scale's start step k_s and denoised with the official deterministic update (its posterior variance
is 0 for omega = 0): with g_t = min(gamma_t^s, gamma_max) (official gamma_max: 0.55),

    x0_mix   = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)          (clamped)
    sharp    = (x0_mix - g_t x~) / (1 - g_t)
    target   = g_{t-1} x~ + (1 - g_{t-1}) sharp                 (clamped)
    x_{t-1}  = sqrt(ab_{t-1}) target + sqrt(1 - ab_{t-1}) (x_t - sqrt(ab_t) x0_mix) / sqrt(1 - ab_t)

and the last step returns clamp(sharp). A network built with blurry_input (not official) also takes x~
as input at every step of scale s. Written as sharp = x~ + (x0_mix - x~) / (1 - g_t), the update
multiplies whatever the network adds to x~ by 1 / (1 - g_t); the `cpu` preset sets gamma_max = 0
(SinDDMConfig.sample_gamma_max says why), the `paper` preset keeps 0.55. A v-prediction model
(SinDDMConfig.prediction = "v", not official) enters these updates through
eps = sqrt(1 - ab_t) x_t + sqrt(ab_t) v, so its x0 estimate is exactly sqrt(ab_t) x_t - sqrt(1 - ab_t) v.
As in the official code, the first network call at a fine scale uses t = k_s - 1 on an image noised to
level k_s. With `stride` > 1 the same updates run on a
respaced subset of timesteps (t-1 replaced by the next visited t). The official code also adds noise of
standard deviation exp(0.5 log 1e-20) = 1e-10 at each fine-scale step, below float32 resolution of
values near 1, so it is left out; and it builds autograd graphs while sampling, which this code does
not (torch.no_grad). Each image draws its noise from its
own generator seeded with its seed, so an image depends on its seed only, not on its batch-mates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from sonosynth.device import autocast, resolve_precision
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import CheckpointRecord, PretrainedGenerator, SampleGroup, to_uint8
from sonosynth.generators.sinddm.config import SinDDMConfig, SinDDMSampleSettings
from sonosynth.generators.sinddm.diffusion import DiffusionTables, eps_from_v
from sonosynth.generators.sinddm.network import SinDDMDenoiser
from sonosynth.generators.sinddm.schedule import sampling_timesteps


class SinDDMModel(PretrainedGenerator):
    """A trained SinDDM/FewDDM ready to sample: EMA denoiser, schedule tables, scale sizes, provenance."""

    kind = "sinddm"
    config_type = SinDDMConfig
    settings_type = SinDDMSampleSettings
    config: SinDDMConfig

    def __init__(self, folder: Path, record: CheckpointRecord, config: SinDDMConfig, denoiser: SinDDMDenoiser,
                 tables: DiffusionTables) -> None:
        super().__init__(folder, record, config)
        self.denoiser = denoiser
        self.tables = tables
        self.sizes: tuple[tuple[int, int], ...] = tuple(tuple(s) for s in record.details["sizes"])

    @property
    def label(self) -> str:
        return self.record.details["label"]

    @classmethod
    def _from_weights(cls, folder: Path, record: CheckpointRecord, config: SinDDMConfig,
                      tensors: dict[str, torch.Tensor], device: torch.device) -> SinDDMModel:
        embedded = tensors["image_embed.weight"].shape[0] if "image_embed.weight" in tensors else 0
        denoiser = SinDDMDenoiser(config.channels, config.dim, embedded, blurry_input=config.blurry_input)
        denoiser.load_state_dict(tensors)
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        denoiser = denoiser.to(device=device, memory_format=fmt).eval().requires_grad_(False)
        tables = DiffusionTables.build(config.timesteps, record.details["blur_levels"], device)
        return cls(folder, record, config, denoiser, tables)

    @classmethod
    def in_memory(cls, denoiser: SinDDMDenoiser, config: SinDDMConfig, tables: DiffusionTables,
                  sizes: tuple[tuple[int, int], ...], step: int = 0) -> SinDDMModel:
        """A model that was never saved (benchmarks sample from a training state directly)."""
        record = CheckpointRecord(kind=cls.kind, config=config.model_dump(mode="json"), training_images=[], step=step,
                                  details={"sizes": [list(s) for s in sizes], "label": "unlabelled",
                                           "blur_levels": [], "start_steps": list(tables.starts)})
        return cls(Path("."), record, config, denoiser, tables)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.denoiser.state_dict()

    def sample_groups(self, n: int, label: str | None, seed: int) -> list[SampleGroup]:
        """One group; with per-image embeddings one group per training image, whose only parent is that image
        (seed s follows image s mod k)."""
        seeds = list(range(seed, seed + n))
        images = self.denoiser.images
        if images == 0:
            return [SampleGroup(self.folder.name, label or self.label, self.training_images, seeds)]
        parents = self.training_images
        groups = [SampleGroup(self.folder.name, label or self.label, [parents[k]], [s for s in seeds if s % images == k])
                  for k in range(images)]
        return [group for group in groups if group.seeds]

    def draw(self, group: SampleGroup, seeds: list[int], size: tuple[int, int] | None,
             settings: SinDDMSampleSettings) -> np.ndarray:
        return to_uint8(generate(self, seeds, size=size, scale_mul=settings.scale_mul, stride=settings.stride,
                                 gamma_max=settings.gamma_max, precision=settings.precision).cpu().numpy())

    def recorded_settings(self, size: tuple[int, int] | None, settings: SinDDMSampleSettings) -> dict[str, Any]:
        return sampling_settings(self, size, scale_mul=settings.scale_mul, stride=settings.stride,
                                 gamma_max=settings.gamma_max)


def output_sizes(sizes: tuple[tuple[int, int], ...], size: tuple[int, int] | None = None,
                 scale_mul: tuple[float, float] = (1.0, 1.0)) -> list[tuple[int, int]]:
    """Per-scale sample sizes: the training sizes times (height, width) multipliers (official scale_mul).

    An explicit final `size` sets the multipliers to size / finest training size, and the finest scale
    is made exactly that size.
    """
    if size is not None:
        height, width = int(size[0]), int(size[1])
        if height < 8 or width < 8:
            raise SonosynthError(f"sample size {height}x{width} is too small; use at least 8x8 pixels.")
        scale_mul = (height / sizes[-1][0], width / sizes[-1][1])
    if scale_mul[0] <= 0 or scale_mul[1] <= 0:
        raise SonosynthError(f"scale_mul must be positive, got {scale_mul}.")
    result = [(max(1, int(h * scale_mul[0])), max(1, int(w * scale_mul[1]))) for h, w in sizes]
    if size is not None:
        result[-1] = (int(size[0]), int(size[1]))
    return result


class _NoiseSource:
    """Per-image CPU generators, so each image's noise depends on its seed alone."""

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.device = device

    def __call__(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators]).to(self.device)


@torch.no_grad()
def generate(model: SinDDMModel, seeds: list[int], *, size: tuple[int, int] | None = None,
             scale_mul: tuple[float, float] | None = None, stride: int | None = None,
             gamma_max: float | None = None, precision: str | None = None,
             on_call: Callable[[], None] | None = None) -> torch.Tensor:
    """Samples for `seeds` as a (n, C, H, W) float tensor in [-1, 1]; `on_call` runs after each network call.

    A denoiser with per-image embeddings (k images) draws seed s from image s mod k's coarsest layout."""
    config = model.config
    device = next(model.denoiser.parameters()).device
    stride = stride or config.sample_stride
    gamma_max = config.sample_gamma_max if gamma_max is None else gamma_max
    precision = resolve_precision(precision or config.precision, device)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    sizes = output_sizes(model.sizes, size, tuple(scale_mul or config.scale_mul))
    noise = _NoiseSource(seeds, device)
    tables, schedule = model.tables, model.tables.schedule
    n, channels = len(seeds), config.channels
    images = model.denoiser.images
    image = torch.tensor([s % images for s in seeds], device=device) if images else None

    def predict(x: torch.Tensor, t: int, scale: int, given: torch.Tensor | None = None) -> torch.Tensor:
        """`given`: the network's blurry input (blurry_input models at the finer scales, else None)."""
        with autocast(device, precision):
            out = model.denoiser(x.contiguous(memory_format=fmt), torch.full((n,), t, device=device), scale, image,
                                 given)
        if on_call is not None:
            on_call()
        if config.prediction == "v":
            return eps_from_v(x, out.float(), schedule.alpha_bar_at(t))
        return out.float()

    def x0_estimate(x: torch.Tensor, eps: torch.Tensor, ab: float) -> torch.Tensor:
        return math.sqrt(1.0 / ab) * x - math.sqrt(1.0 / ab - 1.0) * eps

    # Coarsest scale: ancestral sampling from noise.
    x = noise((channels, *sizes[0]))
    steps = sampling_timesteps(schedule.timesteps, stride)
    for i, t in enumerate(steps):
        prev = steps[i + 1] if i + 1 < len(steps) else -1
        ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(prev)
        x0 = x0_estimate(x, predict(x, t, 0), ab).clamp_(-1.0, 1.0)
        beta = 1.0 - ab / ab_prev
        mean = (beta * math.sqrt(ab_prev) / (1.0 - ab)) * x0 + ((1.0 - ab_prev) * math.sqrt(ab / ab_prev) / (1.0 - ab)) * x
        if prev >= 0:
            mean = mean + math.sqrt(beta * (1.0 - ab_prev) / (1.0 - ab)) * noise((channels, *sizes[0]))
        x = mean

    # Finer scales: upsample, noise to the start step, deterministic blur-aware denoising.
    for scale in range(1, len(sizes)):
        blurry = F.interpolate(x, size=sizes[scale], mode="bilinear", align_corners=False)
        start = tables.starts[scale]
        ab_start = schedule.alpha_bar_at(min(start, schedule.timesteps - 1))
        x = math.sqrt(ab_start) * blurry + math.sqrt(1.0 - ab_start) * noise((channels, *sizes[scale]))
        gammas = tables.gammas[scale].clamp(0.0, gamma_max).tolist()
        given = blurry.contiguous(memory_format=fmt) if config.blurry_input else None  # once per scale, not per step
        steps = sampling_timesteps(start, stride)
        for i, t in enumerate(steps):
            prev = steps[i + 1] if i + 1 < len(steps) else -1
            ab = schedule.alpha_bar_at(t)
            x0_mix = x0_estimate(x, predict(x, t, scale, given), ab)
            sharp = (x0_mix - gammas[t] * blurry) / (1.0 - gammas[t])
            if prev < 0:
                x = sharp.clamp_(-1.0, 1.0)
                break
            ab_prev = schedule.alpha_bar_at(prev)
            target = (gammas[prev] * blurry + (1.0 - gammas[prev]) * sharp).clamp_(-1.0, 1.0)
            x0_mix.clamp_(-1.0, 1.0)
            x = math.sqrt(ab_prev) * target + math.sqrt(1.0 - ab_prev) * (x - math.sqrt(ab) * x0_mix) / math.sqrt(1.0 - ab)
    return x


def network_calls(model: SinDDMModel, stride: int = 1) -> int:
    """How many denoiser evaluations one batch costs (244 for the 560^2 example at stride 1)."""
    schedule = model.tables.schedule
    return sum(len(sampling_timesteps(start, stride)) for start in (schedule.timesteps, *model.tables.starts[1:]))


def sampling_settings(model: SinDDMModel, size: tuple[int, int] | None, **overrides: Any) -> dict[str, Any]:
    """The settings recorded with every synthetic image (what, besides the seed, made it)."""
    config = model.config
    return {
        "step": model.step,
        "size": list(output_sizes(model.sizes, size, tuple(overrides.get("scale_mul") or config.scale_mul))[-1]),
        "stride": overrides.get("stride") or config.sample_stride,
        "gamma_max": config.sample_gamma_max if overrides.get("gamma_max") is None else overrides["gamma_max"],
        "start_steps": list(model.tables.starts[1:]),
    }


__all__ = ["SinDDMModel", "generate", "network_calls", "output_sizes", "sampling_settings"]
