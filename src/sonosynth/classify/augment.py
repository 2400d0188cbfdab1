"""Regular (geometric) augmentation presets of the two studies, as torchvision `transforms.v2` pipelines.

`lung`: the POCOVID-Net training scheme the lung study used (rotations up to 10 degrees,
translations up to 10 %, horizontal and vertical flips). `fetal`: the fetal study's real-image
augmentation (rotations between -30 and 30 degrees, horizontal and vertical flips).
Pipelines act on float image tensors (C, H, W) in [0, 1]; pixels rotated in from outside are black,
the colour of an ultrasound background.
"""

from __future__ import annotations

from typing import Literal

from torchvision.transforms import v2

from sonosynth.errors import SonosynthError

AugmentationName = Literal["lung", "fetal"]
AUGMENTATIONS: tuple[str, ...] = ("lung", "fetal")


def regular_augmentation(name: str) -> v2.Compose:
    """The transform pipeline of a preset; random draws come from torch's global RNG (seeded by training)."""
    if name == "lung":
        return v2.Compose([
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), interpolation=v2.InterpolationMode.BILINEAR, fill=0.0),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
        ])
    if name == "fetal":
        return v2.Compose([
            v2.RandomRotation(degrees=30, interpolation=v2.InterpolationMode.BILINEAR, fill=0.0),
            v2.RandomHorizontalFlip(p=0.5),
            v2.RandomVerticalFlip(p=0.5),
        ])
    raise SonosynthError(f"unknown augmentation preset {name!r}; choose one of {list(AUGMENTATIONS)}.")
