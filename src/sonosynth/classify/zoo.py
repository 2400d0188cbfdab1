"""The classifier registry: a name maps to a builder, timm-style.

Model modules register their builders on import (`@register_classifier("name")`); the registry
imports the built-in families on first use so `sonosynth --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sonosynth.errors import SonosynthError
from sonosynth.registry import Registry

if TYPE_CHECKING:
    from sonosynth.classify.models.base import ClassifierNet

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


_CLASSIFIERS: Registry[ClassifierEntry] = Registry("classifier", (f"sonosynth.classify.models.{family}"
                                                                for family in BUILTIN_FAMILIES))


def register_classifier(name: str, *, min_image_size: int = 32, description: str = "",
                        imagenet_weights: str | None = None, torchvision_arch: str | None = None) -> Callable:
    """Decorator for a builder `(num_classes, in_channels, image_size, input_mode, **options) -> ClassifierNet`."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        _CLASSIFIERS.add(name, ClassifierEntry(name, builder, min_image_size, description, imagenet_weights,
                                               torchvision_arch))
        return builder

    return decorate


def classifier_names() -> list[str]:
    return _CLASSIFIERS.names()


# Names that were renamed, with why: the old name is an error that says which new name is meant.
RENAMED: dict[str, str] = {
    "medmamba": "'medmamba' was the compact CPU variant and is now named so: use medmamba_t for the fetal "
                "study's MedMamba-T (the original's defaults, 14.5 M parameters) or medmamba_compact for the "
                "0.9 M-parameter CPU variant.",
}


def classifier_spec(name: str) -> ClassifierEntry:
    if name in RENAMED:
        raise SonosynthError(RENAMED[name])
    return _CLASSIFIERS.get(name)


def build_classifier(config: dict[str, Any]) -> ClassifierNet:
    """The bare architecture a config describes (as stored in a checkpoint), randomly initialised."""
    spec = classifier_spec(config["name"])
    image_size = int(config["image_size"])
    if image_size < spec.min_image_size:
        raise SonosynthError(f"{spec.name} needs images of at least {spec.min_image_size} px, "
                             f"image_size={image_size} given.")
    return spec.builder(int(config["num_classes"]), int(config["in_channels"]), image_size,
                        config.get("input_mode", "native"), **config.get("options", {}))
