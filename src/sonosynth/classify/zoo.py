"""The classifier registry: a name maps to a builder, timm-style.

Model modules register their builders on import (`@register_classifier("name")`); the registry
imports the built-in families on first use so `sonosynth --help` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sonosynth.errors import SonosynthError

BUILTIN_FAMILIES = ("small_cnn", "pocovidnet", "torchvision_models", "medmamba")


@dataclass(frozen=True)
class ClassifierEntry:
    """A registered classifier: its builder and what its weights and inputs need."""

    name: str
    builder: Callable[..., Any]
    min_image_size: int
    description: str
    imagenet_weights: str | None = None  # the torchvision weights enum, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    torchvision_arch: str | None = None  # the torchvision builder those weights belong to, e.g. "resnet50"


_REGISTRY: dict[str, ClassifierEntry] = {}


def register_classifier(name: str, *, min_image_size: int = 32, description: str = "",
                        imagenet_weights: str | None = None, torchvision_arch: str | None = None) -> Callable:
    """Decorator for a builder `(num_classes, in_channels, image_size, input_mode, **options) -> ClassifierNet`."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = ClassifierEntry(name, builder, min_image_size, description, imagenet_weights,
                                         torchvision_arch)
        return builder

    return decorate


def _import_builtin_families() -> None:
    for family in BUILTIN_FAMILIES:
        module = f"sonosynth.classify.models.{family}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency, not a family absent from this install
                raise


def classifier_names() -> list[str]:
    _import_builtin_families()
    return sorted(_REGISTRY)


# Names that were renamed, with why: the old name is an error that says which new name is meant.
RENAMED: dict[str, str] = {
    "medmamba": "'medmamba' was the compact CPU variant and is now named so: use medmamba_t for the fetal "
                "study's MedMamba-T (the original's defaults, 14.5 M parameters) or medmamba_compact for the "
                "0.9 M-parameter CPU variant.",
}


def classifier_spec(name: str) -> ClassifierEntry:
    _import_builtin_families()
    if name in RENAMED:
        raise SonosynthError(RENAMED[name])
    if name not in _REGISTRY:
        raise SonosynthError(f"unknown classifier {name!r}; available: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]
