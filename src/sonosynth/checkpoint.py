"""Checkpoint files: atomic, self-describing (they carry their config) and with RNG state for exact resume."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sonosynth.atomic import atomic_path
from sonosynth.errors import SonosynthError

FORMAT_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SonosynthError(f"{path}: checkpoint not found.")
    try:
        # Our checkpoints hold RNG states and plain config dicts, which need full unpickling.
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise SonosynthError(f"{path}: not a readable checkpoint ({exc}).") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise SonosynthError(f"{path}: not a sonosynth checkpoint.")
    return payload
