"""The denoiser and the noisy classifier, both MONAI networks (no I/O here)."""

from __future__ import annotations

from monai.networks.nets import DiffusionModelUNet

# monai 1.6 does not export the encoder from monai.networks.nets.
from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder
from torch import nn

from sonosynth.generators.guided.config import GuidedConfig, UNetConfig


def _common(net: UNetConfig) -> dict:
    return {
        "channels": tuple(net.channels), "attention_levels": tuple(net.attention_levels),
        "num_res_blocks": net.num_res_blocks, "num_head_channels": net.num_head_channels,
        "norm_num_groups": net.norm_num_groups,
    }


def null_label(num_classes: int) -> int:
    """Index of the "no label" embedding used for classifier-free guidance (one past the real classes)."""
    return num_classes


def build_denoiser(config: GuidedConfig, num_classes: int) -> nn.Module:
    """Class-conditional U-Net on images or latents (config.diffusion_shape); embedding `num_classes` is the
    unconditional token."""
    channels = config.diffusion_shape[0]
    return DiffusionModelUNet(spatial_dims=2, in_channels=channels, out_channels=channels,
                              num_class_embeds=num_classes + 1, **_common(config.unet))


def build_classifier(config: GuidedConfig, num_classes: int) -> nn.Module:
    """The U-Net's encoder half with a classification head, conditioned on t (Dhariwal & Nichol's noisy classifier)."""
    channels, side, _ = config.diffusion_shape
    return DiffusionModelEncoder(spatial_dims=2, in_channels=channels, out_channels=num_classes,
                                 input_shape=(side, side),
                                 **_common(config.classifier.network))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
