"""The shape every zoo classifier shares: [0, 1] input in, logits out, with hooks for features.

Each network owns its input handling so callers never have to know which normalisation or channel
count a backbone was trained with: a model built for ImageNet weights repeats grayscale to RGB and
uses the ImageNet statistics; a model trained from scratch keeps its native channel count and maps
[0, 1] to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from sonosynth.errors import SonosynthError

InputMode = Literal["native", "imagenet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def stem_channels(in_channels: int, input_mode: InputMode) -> int:
    """Channels the first layer sees: ImageNet weights need RGB, anything else keeps the input's count."""
    if input_mode == "native":
        return in_channels
    if in_channels not in (1, 3):
        raise SonosynthError(
            f"ImageNet weights expect 1 (grayscale, repeated to RGB) or 3 input channels, not {in_channels}; "
            "use --pretrained none for other channel counts."
        )
    return 3


class ClassifierNet(nn.Module):
    """Base class: subclasses define `features` (normalised input -> feature map), `pool` and `head`.

    Transformers override `_embed` when their pooled vector is not a pooling of the feature map
    (ViT's class token).
    """

    def __init__(self, name: str, num_classes: int, in_channels: int, image_size: int,
                 input_mode: InputMode = "native", options: dict[str, Any] | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise SonosynthError(f"a classifier needs at least 2 classes, got {num_classes}.")
        if in_channels < 1:
            raise SonosynthError(f"in_channels must be positive, got {in_channels}.")
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.input_mode: InputMode = input_mode
        self.options = dict(options or {})
        channels = stem_channels(in_channels, input_mode)
        if input_mode == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.5)
        # Not persistent: the normalisation follows from the config, so checkpoints stay architecture-only.
        self.register_buffer("input_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", std.view(1, -1, 1, 1), persistent=False)

    # --- subclass hooks -------------------------------------------------------------------------
    def features(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1)

    head: nn.Module
    # True when the network only accepts image_size x image_size input (ViT's position embedding).
    fixed_input_size: bool = False

    def _embed(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(z))

    # --- public interface -----------------------------------------------------------------------
    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (N, in_channels, H, W) -> the normalised tensor the backbone expects."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise SonosynthError(
                f"{self.name} expects images shaped (N, {self.in_channels}, H, W), got {tuple(x.shape)}."
            )
        if self.fixed_input_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise SonosynthError(f"{self.name} was built for {self.image_size} px images, got "
                                 f"{tuple(x.shape[-2:])}; resize the input or rebuild with that image_size.")
        if x.shape[1] != self.input_mean.shape[1]:
            x = x.expand(-1, self.input_mean.shape[1], -1, -1)
        return (x - self.input_mean) / self.input_std

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial feature map before global pooling, (N, C, h, w)."""
        return self.features(self.prepare(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features, (N, D)."""
        return self._embed(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._embed(self.prepare(x)))

    def build_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture (weights aside)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "input_mode": self.input_mode,
            "options": dict(self.options),
        }

    # --- weights --------------------------------------------------------------------------------
    def head_parameter_names(self) -> list[str]:
        """State-dict keys of the class head (re-initialised when the class count changes)."""
        return [f"head.{key}" for key in self.head.state_dict()]

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Load torchvision ImageNet weights (of the torchvision architecture) into the backbone."""
        raise SonosynthError(f"{self.name} has no ImageNet weights; use --pretrained none.")

    def adapt_transferred_state(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Hook for checkpoint transfer across builds (e.g. ViT position embeddings at another image size)."""
        return state_dict


def adapt_conv_channels(conv: nn.Conv2d, in_channels: int,
                        init: Callable[[nn.Conv2d], None] | None = None) -> nn.Conv2d:
    """The same convolution for a different input channel count, freshly initialised by `init`
    (the architecture's own stem initialisation; PyTorch's default when None)."""
    if conv.in_channels == in_channels:
        return conv
    adapted = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    if init is not None:
        init(adapted)
    return adapted


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
