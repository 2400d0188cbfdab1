"""torchvision architectures (ResNet50, DenseNet169, ViT-B/32, Swin-T) behind the ClassifierNet interface.

Each wrapper keeps the torchvision network as `backbone` with its ImageNet classifier removed, so the
backbone's state dict matches torchvision's ImageNet files minus the classifier keys, and puts a fresh
linear `head` on the pooled features.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from sonosynth.classify.models.base import ClassifierNet, InputMode, adapt_conv_channels
from sonosynth.classify.weights import load_backbone_state, modernise_densenet_keys
from sonosynth.classify.zoo import register_classifier
from sonosynth.errors import SonosynthError


def _kaiming_fan_out(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _kaiming_fan_in(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _vit_patch_init(conv: nn.Conv2d) -> None:
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1 / fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ResNet50Classifier(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> None:
        super().__init__("resnet50", num_classes, in_channels, image_size, input_mode)
        net = torchvision.models.resnet50()
        net.conv1 = adapt_conv_channels(net.conv1, self.input_mean.shape[1], _kaiming_fan_out)
        self.head = nn.Linear(net.fc.in_features, num_classes)
        net.fc = nn.Identity()
        self.backbone = net

    def features(self, z: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(z))))
        return b.layer4(b.layer3(b.layer2(b.layer1(x))))

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        load_backbone_state(self.backbone, state_dict, drop_prefixes=("fc.",), source=source)


class DenseNet169Classifier(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> None:
        super().__init__("densenet169", num_classes, in_channels, image_size, input_mode)
        net = torchvision.models.densenet169()
        net.features.conv0 = adapt_conv_channels(net.features.conv0, self.input_mean.shape[1], _kaiming_fan_in)
        self.head = nn.Linear(net.classifier.in_features, num_classes)
        net.classifier = nn.Identity()
        self.backbone = net

    def features(self, z: torch.Tensor) -> torch.Tensor:
        # torchvision applies this ReLU in forward(), after the `features` block.
        return F.relu(self.backbone.features(z))

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        load_backbone_state(self.backbone, modernise_densenet_keys(state_dict), drop_prefixes=("classifier.",),
                            source=source)


def resize_position_embedding(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """ViT position embedding (1, 1 + g*g, D) -> (1, 1 + grid*grid, D), bicubic over the patch grid."""
    old_grid = math.isqrt(pos.shape[1] - 1)
    if old_grid == grid:
        return pos
    cls, patches = pos[:, :1], pos[:, 1:]
    patches = patches.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


class ViTB32Classifier(ClassifierNet):
    fixed_input_size = True
    patch_size = 32

    def __init__(self, num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> None:
        super().__init__("vit_b_32", num_classes, in_channels, image_size, input_mode)
        if image_size % self.patch_size:
            raise SonosynthError(f"vit_b_32 needs an image size that is a multiple of 32, got {image_size}.")
        net = torchvision.models.vit_b_32(image_size=image_size)
        net.conv_proj = adapt_conv_channels(net.conv_proj, self.input_mean.shape[1], _vit_patch_init)
        self.head = nn.Linear(net.hidden_dim, num_classes)
        nn.init.zeros_(self.head.weight)  # as torchvision initialises its ViT head
        nn.init.zeros_(self.head.bias)
        net.heads = nn.Identity()
        self.backbone = net
        self.grid = image_size // self.patch_size

    def _tokens(self, z: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b._process_input(z)
        x = torch.cat([b.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return b.encoder(x)  # adds position embeddings, runs the blocks and the final LayerNorm

    def features(self, z: torch.Tensor) -> torch.Tensor:
        patches = self._tokens(z)[:, 1:]
        return patches.reshape(z.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2)

    def _embed(self, z: torch.Tensor) -> torch.Tensor:
        return self._tokens(z)[:, 0]

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        state = dict(state_dict)
        key = "encoder.pos_embedding"
        if key in state:
            state[key] = resize_position_embedding(state[key], self.grid)
        load_backbone_state(self.backbone, state, drop_prefixes=("heads.",), source=source)

    def adapt_transferred_state(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = dict(state_dict)
        key = "backbone.encoder.pos_embedding"
        if key in state:
            state[key] = resize_position_embedding(state[key], self.grid)
        return state


class SwinTClassifier(ClassifierNet):
    def __init__(self, num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> None:
        super().__init__("swin_t", num_classes, in_channels, image_size, input_mode)
        net = torchvision.models.swin_t()
        patchify = net.features[0][0]
        net.features[0][0] = adapt_conv_channels(patchify, self.input_mean.shape[1])
        self.head = nn.Linear(net.head.in_features, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # as torchvision initialises Swin's linear layers
        nn.init.zeros_(self.head.bias)
        net.head = nn.Identity()
        self.backbone = net

    def features(self, z: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        return b.permute(b.norm(b.features(z)))  # channels-last tokens -> (N, C, h, w)

    def load_imagenet_state_dict(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        load_backbone_state(self.backbone, state_dict, drop_prefixes=("head.",), source=source)


@register_classifier("resnet50", description="torchvision ResNet-50",
                     imagenet_weights="ResNet50_Weights.IMAGENET1K_V2", torchvision_arch="resnet50")
def build_resnet50(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> ClassifierNet:
    return ResNet50Classifier(num_classes, in_channels, image_size, input_mode)


@register_classifier("densenet169", description="torchvision DenseNet-169",
                     imagenet_weights="DenseNet169_Weights.IMAGENET1K_V1", torchvision_arch="densenet169")
def build_densenet169(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> ClassifierNet:
    return DenseNet169Classifier(num_classes, in_channels, image_size, input_mode)


@register_classifier("vit_b_32", description="torchvision ViT-B/32 (image size a multiple of 32)",
                     imagenet_weights="ViT_B_32_Weights.IMAGENET1K_V1", torchvision_arch="vit_b_32")
def build_vit_b_32(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> ClassifierNet:
    return ViTB32Classifier(num_classes, in_channels, image_size, input_mode)


@register_classifier("swin_t", description="torchvision Swin-T",
                     imagenet_weights="Swin_T_Weights.IMAGENET1K_V1", torchvision_arch="swin_t")
def build_swin_t(num_classes: int, in_channels: int, image_size: int, input_mode: InputMode) -> ClassifierNet:
    return SwinTClassifier(num_classes, in_channels, image_size, input_mode)
