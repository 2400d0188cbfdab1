"""The SinGAN checkpoint folder: layout, the index, and loading trained pyramids.

    <out>/singan.json                  index: resolved config and one entry per training image
    <out>/models/<name>/scale_XX.pt    a finished scale (atomic; carries the resolved config)
    <out>/models/<name>/scale_XX.partial.pt   the scale in progress, for resuming mid-scale
    <out>/models/<name>/losses.csv     one row per iteration and scale

A model folder alone is enough to sample from; the index only groups the models of one fit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sonosynth.atomic import write_text_atomic
from sonosynth.checkpoint import load_checkpoint
from sonosynth.errors import SonosynthError
from sonosynth.generators.singan.cascade import Scale
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.networks import ScaleGenerator, border, frozen

INDEX_FILENAME = "singan.json"
MODELS_DIR = "models"
LOSSES_FILENAME = "losses.csv"


def scale_path(model_dir: Path, scale: int) -> Path:
    return model_dir / f"scale_{scale:02d}.pt"


def partial_path(model_dir: Path, scale: int) -> Path:
    return model_dir / f"scale_{scale:02d}.partial.pt"


@dataclass(frozen=True)
class ModelEntry:
    """One training image's model, as listed in the index."""

    name: str
    folder: Path
    image: Path
    label: str
    num_scales: int


@dataclass
class TrainedModel:
    config: SinGANConfig
    scales: list[Scale]
    shapes: tuple[tuple[int, int], ...]
    scale_factor: float
    image: Path
    label: str

    @property
    def border(self) -> int:
        return border(self.config.num_layers, self.config.kernel_size)


def write_index(out: Path, config: SinGANConfig, entries: list[ModelEntry], complete: list[bool]) -> None:
    payload = {
        "generator": "singan",
        "config": config.model_dump(mode="json"),
        "models": [
            {"name": e.name, "folder": os.path.relpath(e.folder, out), "image": str(e.image), "label": e.label,
             "num_scales": e.num_scales, "complete": done}
            for e, done in zip(entries, complete, strict=True)
        ],
    }
    write_text_atomic(out / INDEX_FILENAME, json.dumps(payload, indent=2) + "\n")


def read_index(out: Path) -> tuple[SinGANConfig, list[ModelEntry]]:
    path = out / INDEX_FILENAME
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        config = SinGANConfig.model_validate(payload["config"])
        entries = [ModelEntry(m["name"], out / m["folder"], Path(m["image"]), m["label"], int(m["num_scales"]))
                   for m in payload["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SonosynthError(f"{path}: not a readable SinGAN index ({exc}). Re-run `sonosynth train singan`.") from exc
    return config, entries


def find_models(checkpoint: Path) -> list[ModelEntry]:
    """The models under a fit folder (with its index) or a single model folder."""
    checkpoint = Path(checkpoint)
    if (checkpoint / INDEX_FILENAME).is_file():
        return read_index(checkpoint)[1]
    first = scale_path(checkpoint, 0)
    if first.is_file():
        meta = load_checkpoint(first)
        return [ModelEntry(checkpoint.name, checkpoint, Path(meta["image"]), meta["label"], len(meta["shapes"]))]
    raise SonosynthError(
        f"{checkpoint}: not a SinGAN checkpoint (no {INDEX_FILENAME} and no scale_00.pt). "
        "Give the --out folder of `sonosynth train singan`."
    )


def load_scale_file(path: Path, device: torch.device) -> dict:
    payload = load_checkpoint(path, map_location=device)
    if payload.get("kind") != "singan-scale":
        raise SonosynthError(f"{path}: not a SinGAN scale checkpoint.")
    return payload


def scale_from_payload(payload: dict, config: SinGANConfig, device: torch.device) -> Scale:
    channels, min_channels = payload["widths"]
    generator = ScaleGenerator(config.channels, channels, min_channels, config.num_layers, config.kernel_size)
    generator.load_state_dict(payload["generator"])
    return Scale(frozen(generator.to(device)), float(payload["noise_amp"]), payload["z_rec"].to(device),
                 tuple(payload["shape"]))


def load_model(entry: ModelEntry, device: torch.device) -> TrainedModel:
    """All scales of one finished model, frozen, on `device`."""
    scales, payload = [], None
    for k in range(entry.num_scales):
        path = scale_path(entry.folder, k)
        if not path.is_file():
            raise SonosynthError(
                f"{entry.folder}: training stopped after {k} of {entry.num_scales} scales. "
                "Re-run the same `sonosynth train singan` command to resume it."
            )
        payload = load_scale_file(path, device)
        config = SinGANConfig.model_validate(payload["config"])
        scales.append(scale_from_payload(payload, config, device))
    assert payload is not None
    return TrainedModel(config, scales, tuple(tuple(s) for s in payload["shapes"]), float(payload["scale_factor"]),
                        Path(payload["image"]), payload["label"])
