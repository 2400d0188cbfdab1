"""POCOVID-Net (Born et al. 2021), as used in the lung-ultrasound study: VGG16 convolutional features,
global average pooling, dense 64 + ReLU, dropout 0.5, batch norm, dense to the classes.

By default only the last VGG16 conv layer and the head train (~2.4 M trainable, ~12.4 M frozen
parameters, as the study reports); `trainable_conv_layers` widens that (13 = the whole backbone,
sensible when training from scratch).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from sonosynth.classify.models.base import ClassifierNet, InputMode, adapt_conv_channels
from sonosynth.classify.weights import load_backbone_state
from sonosynth.classify.zoo import register_classifier
from sonosynth.errors import SonosynthError

VGG16_CONV_LAYERS = 13


def _vgg_conv_init(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(conv.bias)


class PocovidNet(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 224,
                 input_mode: InputMode = "native", trainable_conv_layers: int = 1, hidden_units: int = 64,
                 dropout: float = 0.5) -> None:
        super().__init__("pocovidnet", num_classes, in_channels, image_size, input_mode,
                         options={"trainable_conv_layers": trainable_conv_layers, "hidden_units": hidden_units,
                                  "dropout": dropout})
        if not 0 <= trainable_conv_layers <= VGG16_CONV_LAYERS:
            raise SonosynthError(f"pocovidnet: trainable_conv_layers must be 0..{VGG16_CONV_LAYERS}, "
                                 f"got {trainable_conv_layers}.")
        # Only VGG16's convolutional part: building its 120 M-parameter ImageNet classifier would be wasted.
        features = make_layers(cfgs["D"], batch_norm=False)
        for module in features:
            if isinstance(module, nn.Conv2d):
                _vgg_conv_init(module)
        features[0] = adapt_conv_channels(features[0], self.input_mean.shape[1], _vgg_conv_init)
        self.backbone = features
        self.head = nn.Sequential(
            nn.Linear(512, hidden_units),
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

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        # torchvision's VGG16 file holds `features.*` and the ImageNet `classifier.*`; only the features are used.
        features = {k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")}
        load_backbone_state(self.backbone, features, drop_prefixes=(), source=source)


@register_classifier("pocovidnet", description="VGG16 + dense head of the lung study (last conv + head train)",
                     imagenet_weights="VGG16_Weights.IMAGENET1K_V1", torchvision_arch="vgg16")
def build_pocovidnet(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode,
                     **options) -> PocovidNet:
    return PocovidNet(num_classes, in_channels, image_size, input_mode, **options)
