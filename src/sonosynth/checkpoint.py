"""Checkpoint files without pickles: tensors in safetensors, everything else as JSON beside them.

A checkpoint payload is any nesting of dicts, lists and tuples whose leaves are tensors, numpy
arrays, numbers, strings, booleans or None (model and optimizer state dicts, LR-scheduler state,
RNG states, loss logs). `save_checkpoint` splits it in two: every tensor goes into the safetensors
file under its path in the nesting (`model.conv.weight`, `optimizer.state.3.exp_avg`), and the rest
becomes a JSON skeleton, stored in the same file's metadata, in which each tensor is a reference
`{"__tensor__": key}`. Loading rebuilds the nesting exactly: floats round-trip through JSON's
shortest repr, tuples, numpy arrays, `collections.Counter` and dicts with non-string keys (optimizer
state keyed by parameter index, MultiStepLR milestones) are tagged so they come back as the same
types. Nothing in the file is executable, so a checkpoint from anyone is safe to open (the old
`torch.load(weights_only=False)` could run arbitrary code).

One file per write, written atomically: a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sonosynth.atomic import atomic_path
from sonosynth.errors import SonosynthError

FORMAT_VERSION = 2
_SKELETON_KEY = "sonosynth"  # safetensors metadata entry holding the JSON skeleton
_TENSOR, _TUPLE, _ARRAY, _COUNTER, _ITEMS = "__tensor__", "__tuple__", "__ndarray__", "__counter__", "__items__"
_TAGS = {_TENSOR, _TUPLE, _ARRAY, _COUNTER, _ITEMS}


# ------------------------------------------------------------------------------ nesting <-> (JSON, tensors)
def encode_state(value: Any, tensors: dict[str, torch.Tensor], key: str = "") -> Any:
    """The JSON skeleton of `value`; tensors are moved into `tensors` under their dotted path."""
    if isinstance(value, torch.Tensor):
        name = key or "tensor"
        # clone: safetensors refuses tensors that share storage (views, tied weights).
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {_TENSOR: name}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Counter):
        return {_COUNTER: [[k, encode_state(v, tensors, f"{key}.{i}")] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not _TAGS & value.keys():
            return {k: encode_state(v, tensors, f"{key}.{k}" if key else k) for k, v in value.items()}
        return {_ITEMS: [[k, encode_state(v, tensors, f"{key}.{k}")] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [encode_state(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode_state(v, tensors, f"{key}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint entry {key or '<root>'} has type {type(value).__name__}, which a checkpoint "
                    "cannot store without pickling; convert it to tensors, numbers or strings.")


def decode_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `encode_state`."""
    if isinstance(skeleton, list):
        return [decode_state(v, tensors) for v in skeleton]
    if not isinstance(skeleton, dict):
        return skeleton
    if _TENSOR in skeleton:
        return tensors[skeleton[_TENSOR]]
    if _ARRAY in skeleton:
        return np.asarray(skeleton[_ARRAY], dtype=skeleton["dtype"])
    if _TUPLE in skeleton:
        return tuple(decode_state(v, tensors) for v in skeleton[_TUPLE])
    if _COUNTER in skeleton:
        return Counter({_key(k): decode_state(v, tensors) for k, v in skeleton[_COUNTER]})
    if _ITEMS in skeleton:
        return {_key(k): decode_state(v, tensors) for k, v in skeleton[_ITEMS]}
    return {k: decode_state(v, tensors) for k, v in skeleton.items()}


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ------------------------------------------------------------------------------ files
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write `payload` as one safetensors file (tensors) with its JSON skeleton in the metadata; atomic."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = encode_state({"format_version": FORMAT_VERSION, **payload}, tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_SKELETON_KEY: json.dumps(skeleton)})
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by `save_checkpoint`; tensors land on `map_location`."""
    path = Path(path)
    if not path.is_file():
        raise SonosynthError(f"{path}: checkpoint not found.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device=str(map_location))
        skeleton = json.loads(metadata[_SKELETON_KEY])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise SonosynthError(f"{path}: not a readable sonosynth checkpoint ({exc}). Checkpoints written before "
                             "format 2 were pickles, which are no longer opened; retrain to get a safe one.") from exc
    payload = decode_state(skeleton, tensors)
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise SonosynthError(f"{path}: not a sonosynth checkpoint of format {FORMAT_VERSION}.")
    return payload


def save_weights(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Plain safetensors weights (a state dict) with string metadata; atomic."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)
    return path


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor],
                                                                                     dict[str, str]]:
    """(tensors, metadata) of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SonosynthError(f"{path}: weights file not found.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path), device=str(device)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise SonosynthError(f"{path}: not a readable safetensors file ({exc}).") from exc


# ------------------------------------------------------------------------------ RNG state
def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


__all__ = ["FORMAT_VERSION", "capture_rng_state", "decode_state", "encode_state", "load_checkpoint",
           "load_weights", "restore_rng_state", "save_checkpoint", "save_weights"]
