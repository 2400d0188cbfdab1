"""Sampling trained SinGANs into a SyntheticSet.

Each image gets its own seed (`seed + i`) and its own noise at every scale, so an image depends
only on its seed and its model, never on the batch it was drawn in or on how many were asked for.
With several models (one per training image), sample i comes from model i mod M: the n images
are dealt round-robin, so every training image contributes floor(n/M) or ceil(n/M) samples, and
each row's `parents` names its own model's training image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonosynth.data.manifest import Manifest
from sonosynth.device import resolve_device
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import SyntheticSetWriter, to_uint8
from sonosynth.generators.singan.cascade import cascade, draw_noise
from sonosynth.generators.singan.checkpoints import TrainedModel, find_models, load_model
from sonosynth.generators.singan.pyramid import scaled_shapes
from sonosynth.progress import track

GENERATOR_NAME = "singan"


def generate(model: TrainedModel, seeds: list[int], size: tuple[int, int] | None = None,
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


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' (or a single number for a square) to (height, width)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise SonosynthError(f"size {text!r} is not HxW, e.g. 256x320.") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise SonosynthError(f"size {text!r} must be HxW with both sides at least 8 px.")
    return values[0], values[1]


def sample(checkpoint: Path, n: int, out: Path, *, label: str | None = None, size: tuple[int, int] | None = None,
           seed: int = 0, device: str = "auto", progress: bool = True, batch: int | None = None,
           **settings: Any) -> Manifest:
    """Write `n` samples of the fit at `checkpoint` into `out` (PNG + manifest.csv rows); resumable by seed."""
    if settings:
        raise SonosynthError(f"SinGAN sampling has no setting(s) {sorted(settings)}; it takes size, seed and batch.")
    if n < 1:
        raise SonosynthError("asked for no samples: n must be at least 1.")
    torch_device = resolve_device(device)
    entries = find_models(Path(checkpoint))
    size = (int(size[0]), int(size[1])) if size is not None else None
    record = {"size": list(size) if size else None}
    assigned = [(entry, [seed + i for i in range(n) if i % len(entries) == m]) for m, entry in enumerate(entries)]
    assigned = [(entry, seeds) for entry, seeds in assigned if seeds]

    def open_writer(entry) -> SyntheticSetWriter:
        # Opened one model at a time, after the previous model's flush, so each sees all rows on disk.
        return SyntheticSetWriter(out, GENERATOR_NAME, entry.folder, [entry.image], record, label or entry.label)

    todo = sum(len(open_writer(entry).missing_seeds(seeds)) for entry, seeds in assigned)
    bar = track(range(todo), "singan samples", total=todo, enabled=progress and todo > 0)
    manifest = None
    for entry, seeds in assigned:
        writer = open_writer(entry)
        missing = writer.missing_seeds(seeds)
        if missing:
            model = load_model(entry, torch_device)
            step = batch or model.config.sample_batch
            for start in range(0, len(missing), step):
                chunk = missing[start: start + step]
                images = to_uint8(generate(model, chunk, size, torch_device).cpu().numpy())
                for s, image in zip(chunk, images, strict=True):
                    writer.add(s, np.ascontiguousarray(image))
                    next(bar, None)
                manifest = writer.flush()
        else:
            manifest = writer.flush()
    for _ in bar:  # close the progress bar
        pass
    return manifest
