"""POCOVID-Net (Born et al. 2021), as used in the lung-ultrasound study: VGG16 convolutional features,
average pooling, dense 64 + ReLU, dropout 0.5, batch norm, dense to the classes.

By default only the last VGG16 conv layer and the head train (2,392,963 trainable, 12,354,880 frozen
parameters with ImageNet weights, as the study reports ~2.4 M / ~12.4 M); `trainable_conv_layers`
widens that (13 = the whole backbone). Frozen layers only make sense with pretrained weights: without
them every layer trains by default (with a warning), and frozen layers asked for explicitly are refused.

`head_pooling`: `avg4x4` is Born et al.'s head (Keras AveragePooling2D(4, 4), stride 4, no padding,
then flatten): on the 7 x 7 map of a 224 px input it averages the top-left 4 x 4 window into one
512-vector. `global` averages the whole map.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from sonosynth.classify.models.base import ClassifierNet, InputMode, adapt_conv_channels
from sonosynth.classify.weights import load_backbone_state
from sonosynth.classify.zoo import register_classifier
from sonosynth.errors import SonosynthError

log = logging.getLogger(__name__)
VGG16_CONV_LAYERS = 13
HEAD_POOLING = ("global", "avg4x4")


def _vgg_conv_init(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


class PocovidNet(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 224,
                 input_mode: InputMode = "native", trainable_conv_layers: int | None = None, hidden_units: int = 64,
                 dropout: float = 0.5, head_pooling: str = "global") -> None:
        if trainable_conv_layers is None:
            # The study's choice (last conv layer) needs pretrained weights; from scratch every layer must learn.
            trainable_conv_layers = 1 if input_mode == "imagenet" else VGG16_CONV_LAYERS
            if input_mode == "native":
                log.warning("pocovidnet without pretrained weights: all %d conv layers train (the study froze 12 "
                            "ImageNet-initialised ones)", VGG16_CONV_LAYERS)
        options = {"trainable_conv_layers": trainable_conv_layers, "hidden_units": hidden_units, "dropout": dropout}
        if head_pooling != "global":  # only when set, so checkpoints from before the option still load alike
            options["head_pooling"] = head_pooling
        super().__init__("pocovidnet", num_classes, in_channels, image_size, input_mode, options=options)
        if not 0 <= trainable_conv_layers <= VGG16_CONV_LAYERS:
            raise SonosynthError(f"pocovidnet: trainable_conv_layers must be 0..{VGG16_CONV_LAYERS}, "
                                 f"got {trainable_conv_layers}.")
        if input_mode == "native" and trainable_conv_layers < VGG16_CONV_LAYERS:
            raise SonosynthError(
                f"pocovidnet: {VGG16_CONV_LAYERS - trainable_conv_layers} conv layer(s) would stay frozen at their "
                f"random initialisation (pretrained: none). Use pretrained: imagenet (the study), or train the "
                f"whole backbone: options: {{trainable_conv_layers: {VGG16_CONV_LAYERS}}}.")
        if head_pooling not in HEAD_POOLING:
            raise SonosynthError(f"pocovidnet: head_pooling must be one of {', '.join(HEAD_POOLING)}, "
                                 f"got {head_pooling!r}.")
        self.head_pooling = head_pooling
        side = image_size // 32  # VGG16's five 2x2 max-pools
        if head_pooling == "avg4x4" and side < 4:
            raise SonosynthError(f"pocovidnet: head_pooling avg4x4 needs image_size >= 128 (a 4 x 4 feature map), "
                                 f"got {image_size}.")
        pooled = 512 * ((side - 4) // 4 + 1) ** 2 if head_pooling == "avg4x4" else 512
        # Only VGG16's convolutional part: building its 120 M-parameter ImageNet classifier would be wasted.
        features = make_layers(cfgs["D"], batch_norm=False)
        for module in features:
            if isinstance(module, nn.Conv2d):
                _vgg_conv_init(module)
        features[0] = adapt_conv_channels(features[0], self.input_mean.shape[1], _vgg_conv_init)
        self.backbone = features
        self.head = nn.Sequential(
            nn.Linear(pooled, hidden_units),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.BatchNorm1d(hidden_units),
            nn.Linear(hidden_units, num_classes),
        )
        convs = [m for m in features if isinstance(m, nn.Conv2d)]
        for conv in convs[: len(convs) - trainable_conv_layers]:
            conv.requires_grad_(False)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone(z)

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        if self.head_pooling == "avg4x4":
            # channels-last flatten, as Keras' Flatten after AveragePooling2D
            return torch.flatten(nn.functional.avg_pool2d(fmap, 4).permute(0, 2, 3, 1), 1)
        return super().pool(fmap)

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        # torchvision's VGG16 file holds `features.*` and the ImageNet `classifier.*`; only the features are used.
        features = {k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")}
        load_backbone_state(self.backbone, features, drop_prefixes=(), source=source)


@register_classifier("pocovidnet", description="VGG16 + dense head of the lung study (last conv + head train)",
                     imagenet_weights="VGG16_Weights.IMAGENET1K_V1", torchvision_arch="vgg16")
def build_pocovidnet(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode,
                     trainable_conv_layers: int | None = None, hidden_units: int = 64, dropout: float = 0.5,
                     head_pooling: str = "global") -> PocovidNet:
    return PocovidNet(num_classes, in_channels, image_size, input_mode, trainable_conv_layers, hidden_units,
                      dropout, head_pooling)
