"""Classifier checkpoints: the weights plus the config that rebuilds the architecture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sonosynth.checkpoint import load_checkpoint, save_checkpoint
from sonosynth.classify.models.base import ClassifierNet
from sonosynth.classify.zoo import build_classifier
from sonosynth.errors import SonosynthError

CLASSIFIER_KIND = "classifier"
_RESERVED_KEYS = {"kind", "config", "state_dict", "format_version"}


def save_classifier(path: str | os.PathLike, model: ClassifierNet, classes: list[str],
                    extra: dict[str, Any] | None = None) -> Path:
    """Atomically write weights, config (name, num_classes, in_channels, image_size, classes, ...) and `extra`.

    `extra` entries become top-level payload keys (e.g. epoch, history, optimizer state).
    """
    classes = list(classes)
    if len(classes) != model.num_classes:
        raise SonosynthError(f"{model.name} has {model.num_classes} outputs but {len(classes)} class names "
                             f"were given ({classes}).")
    extra = dict(extra or {})
    clash = _RESERVED_KEYS & extra.keys()
    if clash:
        raise SonosynthError(f"extra checkpoint entries may not use the reserved keys {sorted(clash)}.")
    state = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    payload = {"kind": CLASSIFIER_KIND, "config": {**model.build_config(), "classes": classes},
               "state_dict": state, **extra}
    return save_checkpoint(path, payload)


def read_classifier_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload (config, state_dict and the `extra` entries); errors on a non-classifier file."""
    payload = load_checkpoint(path)
    if payload.get("kind") != CLASSIFIER_KIND or "config" not in payload or "state_dict" not in payload:
        raise SonosynthError(f"{path}: not a sonosynth classifier checkpoint (kind={payload.get('kind')!r}); "
                             "pass a file written by `sonosynth classify`.")
    return payload


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[ClassifierNet, list[str]]:
    """Rebuild the classifier from its stored config and load its weights; returned in eval mode."""
    payload = read_classifier_checkpoint(path)
    config = payload["config"]
    model = build_classifier(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise SonosynthError(f"{path}: weights do not match the stored {config.get('name')} config ({exc}).") from exc
    return model.to(device).eval(), list(config["classes"])
