"""The SinGAN checkpoint folder (the shared layout of generators/base.py) and the trained model.

A SinGAN fit trains one pyramid per training image (its "models", each named after its image):

    generator.json              the shared record; `details.models` lists each model's image, label,
                                pyramid shapes and, per finished scale, its noise amplitude and widths
    model.safetensors           per finished scale `<model>.<scale>.generator.*` and `<model>.<scale>.z_rec`
    training_state.safetensors  the model in training: the last finished scale's critic and RNG state
                                (the next scale starts from them) and the scale in progress, for resuming
                                mid-scale
    losses/<model>.csv          one row per iteration and scale
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonosynth.errors import SonosynthError
from sonosynth.generators.base import (
    CheckpointRecord,
    PretrainedGenerator,
    SampleGroup,
    SampleSettings,
    round_robin,
    to_uint8,
)
from sonosynth.generators.singan.cascade import Scale
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.networks import ScaleGenerator, frozen
from sonosynth.generators.singan.sampling import SinGANPyramid, generate

LOSSES_DIR = "losses"


@dataclass
class ModelEntry:
    """One training image's model within a fit (generator.json `details.models[i]`)."""

    name: str
    image: Path  # absolute path of the training image
    label: str
    shapes: list[list[int]]
    scale_factor: float
    scales: list[dict[str, Any]] = field(default_factory=list)  # finished scales: noise_amp, widths, shape

    @property
    def num_scales(self) -> int:
        return len(self.shapes)

    @property
    def complete(self) -> bool:
        return len(self.scales) == len(self.shapes)

    def details(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "shapes": self.shapes, "scale_factor": self.scale_factor,
                "scales": self.scales}


def losses_path(out: Path, name: str) -> Path:
    return Path(out) / LOSSES_DIR / f"{name}.csv"


def scale_key(model: str, scale: int) -> str:
    return f"{model}.{scale:02d}"


def scale_tensors(model: str, scale: int, payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A finished scale's sampling weights under its keys in model.safetensors."""
    key = scale_key(model, scale)
    tensors = {f"{key}.generator.{k}": v for k, v in payload["generator"].items()}
    tensors[f"{key}.z_rec"] = payload["z_rec"]
    return tensors


def scale_payload(model: str, scale: int, entry: ModelEntry, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A finished scale back from model.safetensors and its generator.json entry."""
    key = scale_key(model, scale)
    prefix = f"{key}.generator."
    info = entry.scales[scale]
    return {"generator": {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
            "z_rec": tensors[f"{key}.z_rec"], "noise_amp": float(info["noise_amp"]), "widths": list(info["widths"]),
            "shape": list(info["shape"])}


def scale_from_payload(payload: dict, config: SinGANConfig, device: torch.device) -> Scale:
    channels, min_channels = payload["widths"]
    generator = ScaleGenerator(config.channels, channels, min_channels, config.num_layers, config.kernel_size)
    generator.load_state_dict(payload["generator"])
    return Scale(frozen(generator.to(device)), float(payload["noise_amp"]), payload["z_rec"].to(device),
                 tuple(payload["shape"]))


def model_entries(record: CheckpointRecord, folder: Path) -> list[ModelEntry]:
    images = record.image_paths(folder)
    return [ModelEntry(m["name"], images[i], m["label"], [list(s) for s in m["shapes"]], float(m["scale_factor"]),
                       list(m["scales"]))
            for i, m in enumerate(record.details["models"])]


class SinGANModel(PretrainedGenerator):
    """A finished SinGAN fit: one pyramid per training image; `n` images are dealt round-robin over them."""

    kind = "singan"
    config_type = SinGANConfig
    settings_type = SampleSettings
    config: SinGANConfig

    def __init__(self, folder: Path, record: CheckpointRecord, config: SinGANConfig, pyramids: list[SinGANPyramid],
                 device: torch.device) -> None:
        super().__init__(folder, record, config)
        self.pyramids = pyramids
        self.device = device

    @classmethod
    def _from_weights(cls, folder: Path, record: CheckpointRecord, config: SinGANConfig,
                      tensors: dict[str, torch.Tensor], device: torch.device) -> SinGANModel:
        pyramids = []
        for entry in model_entries(record, folder):
            if not entry.complete:
                raise SonosynthError(f"{folder}: model {entry.name} stopped after {len(entry.scales)} of "
                                     f"{entry.num_scales} scales. Re-run the same `sonosynth train singan` command "
                                     "to resume it.")
            scales = [scale_from_payload(scale_payload(entry.name, k, entry, tensors), config, device)
                      for k in range(entry.num_scales)]
            pyramids.append(SinGANPyramid(config, scales, tuple(tuple(s) for s in entry.shapes), entry.scale_factor,
                                          entry.image, entry.label, entry.name))
        return cls(folder, record, config, pyramids, device)

    def weights(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for pyramid in self.pyramids:
            for k, scale in enumerate(pyramid.scales):
                tensors.update(scale_tensors(pyramid.name, k, {"generator": scale.generator.state_dict(),
                                                               "z_rec": scale.z_rec}))
        return tensors

    def sample_groups(self, n: int, label: str | None, seed: int) -> list[SampleGroup]:
        dealt = round_robin(n, len(self.pyramids), seed)
        return [SampleGroup(p.name, label or p.label, [p.image], seeds, member=i)
                for i, (p, seeds) in enumerate(zip(self.pyramids, dealt, strict=True)) if seeds]

    def draw(self, group: SampleGroup, seeds: list[int], size: tuple[int, int] | None,
             settings: SampleSettings) -> np.ndarray:
        return to_uint8(generate(self.pyramids[group.member], seeds, size, self.device).cpu().numpy())


__all__ = ["LOSSES_DIR", "ModelEntry", "SinGANModel", "SinGANPyramid", "losses_path", "model_entries",
           "scale_from_payload", "scale_payload", "scale_tensors"]
