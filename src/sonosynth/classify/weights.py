"""Where pretrained weights come from: torchvision's ImageNet weights (download or local file) and
sonosynth classifier checkpoints (transfer learning, e.g. pretrain on synthetic, fine-tune on real)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sonosynth.classify.zoo import ClassifierEntry
from sonosynth.errors import SonosynthError


def imagenet_state_dict(spec: ClassifierEntry, weights: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The torchvision ImageNet state dict for `spec`: from `weights` when given, else torchvision's download."""
    if spec.imagenet_weights is None:
        raise SonosynthError(f"{spec.name} has no ImageNet weights; use --pretrained none "
                             "(or a sonosynth classifier checkpoint).")
    if weights is not None:
        return read_state_dict_file(Path(weights), spec)
    try:
        state = _download_state_dict(spec.imagenet_weights)
    except Exception as exc:  # any download failure (offline, proxy, hash) has the same fix
        raise SonosynthError(_how_to_provide_weights(spec, f"torchvision could not download them ({exc})")) from exc
    return state


def _download_state_dict(enum_name: str) -> dict[str, torch.Tensor]:
    """torchvision's own download (it uses the torch hub cache first, so an offline pre-filled cache works)."""
    from torchvision.models import get_weight

    return get_weight(enum_name).get_state_dict(progress=True, check_hash=True)


def _how_to_provide_weights(spec: ClassifierEntry, problem: str) -> str:
    arch, enum_name = spec.torchvision_arch, spec.imagenet_weights
    variant = enum_name.split(".")[-1]
    return (
        f"{spec.name}: ImageNet weights torchvision.models.{enum_name} unavailable: {problem}. "
        "Either run once with internet access (torchvision caches them in ~/.cache/torch/hub/checkpoints), "
        "or on a machine with internet save them with "
        f"python -c \"import torch, torchvision; torch.save(torchvision.models.{arch}(weights='{variant}')"
        f".state_dict(), '{arch}_imagenet.pth')\" and pass --weights {arch}_imagenet.pth."
    )


def read_state_dict_file(path: Path, spec: ClassifierEntry) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SonosynthError(_how_to_provide_weights(spec, f"weights file {path} not found"))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise SonosynthError(f"{path}: not a readable PyTorch state dict ({exc}).") from exc
    # Accept the common wrappers around a bare state dict.
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SonosynthError(f"{path}: expected a state dict (parameter name -> tensor) of torchvision's "
                             f"{spec.torchvision_arch}.")
    return dict(loaded)


_OLD_DENSENET_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def modernise_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The published DenseNet files name layers `norm.1`; the current architecture calls them `norm1`."""
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET_KEY.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def load_backbone_state(module: torch.nn.Module, state: dict[str, torch.Tensor], *, drop_prefixes: tuple[str, ...],
                        source: str) -> None:
    """Load `state` into `module` strictly, ignoring the ImageNet classifier keys under `drop_prefixes`."""
    kept = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    try:
        module.load_state_dict(kept, strict=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())
        if len(summary) > 400:
            summary = summary[:400] + " ..."
        raise SonosynthError(f"{source}: weights do not fit this architecture ({summary}).") from exc


def transfer_classifier_weights(model: torch.nn.Module, payload: dict[str, Any], source: Path) -> None:
    """Load a sonosynth classifier checkpoint into `model`; the class head is kept only when its shape fits."""
    state = dict(payload["state_dict"])
    own = model.state_dict()
    head_keys = set(model.head_parameter_names())
    if any(k in state and state[k].shape != own[k].shape for k in head_keys):
        state = {k: v for k, v in state.items() if k not in head_keys}  # new class count: fresh head
    state = model.adapt_transferred_state(state)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:400]
        raise SonosynthError(f"{source}: checkpoint weights do not fit this {model.name} ({summary}).") from exc
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise SonosynthError(f"{source}: checkpoint does not match this {model.name} "
                             f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]}).")
