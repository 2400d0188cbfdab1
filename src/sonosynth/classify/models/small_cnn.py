"""A compact CNN for the CPU presets: a few conv-BN-ReLU stages, global pooling, one linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sonosynth.classify.models.base import ClassifierNet, InputMode
from sonosynth.classify.zoo import register_classifier

DEFAULT_WIDTHS = (16, 32, 64, 128, 160)


def _stage(in_channels: int, out_channels: int, downsample: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if downsample:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(ClassifierNet):
    """~0.28 M parameters with the default widths; each stage but the last halves the resolution."""

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 128,
                 input_mode: InputMode = "native", widths: Sequence[int] = DEFAULT_WIDTHS,
                 dropout: float = 0.2) -> None:
        super().__init__("small_cnn", num_classes, in_channels, image_size, input_mode,
                         options={"widths": list(widths), "dropout": dropout})
        channels = [self.input_mean.shape[1], *widths]
        self.body = nn.Sequential(*[
            _stage(channels[i], channels[i + 1], downsample=i < len(widths) - 1) for i in range(len(widths))
        ])
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], num_classes))

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


@register_classifier("small_cnn", min_image_size=16,
                     description="compact conv-BN-ReLU network for CPU runs (64-128 px)")
def build_small_cnn(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode,
                    **options) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, image_size, input_mode, **options)
