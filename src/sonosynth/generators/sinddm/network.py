"""SinDDM's denoiser: four small convolutional blocks conditioned on (timestep, scale). No I/O.

Structure as in the official `SinDDMNet` (multiscale=True): t and s each get a 32-d sinusoidal
embedding; the concatenation goes through Linear(64, 128) - GELU - Linear(128, 32); every block maps
that vector to a per-channel bias (GELU - Linear(32, 32) - 1x1 conv to the block width, written here
as a Linear: the same map on a 1x1 input). A block is: depthwise 5x5 conv, add the bias, 3x3 conv,
GELU, 3x3 conv, plus a residual (1x1 conv when the width changes). Widths are dim/2, dim, dim, dim/2
(80-160-160-80 at dim 160, about 1.1 M parameters), then a 1x1 conv back to the image channels.
Receptive field: 4 blocks x (4 + 2 + 2) + 1 = 33 px (the paper says 35).

The network predicts the noise epsilon (the paper's text says x_0; the code it ran predicts epsilon).

Optional, not in the official code (SinDDMConfig.image_embedding, for FewDDM): with `images` = k > 0 a
learned 32-d vector per training image, e_k, is added to the condition vector at the coarsest scale
only (scale index 0): condition = MLP([emb(t), emb(s)]) + [s = 0] e_k. The coarsest scale alone sets a
sample's layout and starts from pure noise, so without it a network trained on k different layouts
draws a blend of them; the finer scales refine an upsampled sample and stay shared by all images.
The vectors start at zero, so an untrained embedding is the official network.

Optional, not in the official code (SinDDMConfig.blurry_input): with `blurry_input` the network takes a
second input, x~, the upsampled coarser image that a finer scale refines, concatenated to x_t as extra
channels (as cascaded diffusion models condition on the low-resolution image, Ho et al. 2022). In the
official network a finer scale sees x~ only through x_t, buried under noise of standard deviation
sqrt(1 - ab_t) (0.89 at the first fine scale's start step), and each scale re-draws part of the layout;
with x~ as an input the layout is given at every noise level. The coarsest scale gets zeros there.

`compiled_depthwise_grad` swaps the depthwise convolutions for `depthwise.DepthwiseConv2d`: the same
layer and weights, with a compiled weight gradient on the CPU (a speed switch; see that module).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sonosynth.generators.sinddm.depthwise import DepthwiseConv2d

EMBEDDING_DIM = 32


def sinusoidal_embedding(values: torch.Tensor, dim: int = EMBEDDING_DIM) -> torch.Tensor:
    """(B,) numbers -> (B, dim): sines then cosines at log-spaced frequencies 1 .. 1/10000."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=values.device, dtype=torch.float32)
                            * -(math.log(10000.0) / (half - 1)))
    angles = values.float()[:, None] * frequencies[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ConditionedBlock(nn.Module):
    def __init__(self, width_in: int, width_out: int, condition_dim: int = EMBEDDING_DIM,
                 compiled_depthwise_grad: bool = False) -> None:
        super().__init__()
        self.condition = nn.Sequential(nn.GELU(), nn.Linear(condition_dim, condition_dim),
                                       nn.Linear(condition_dim, width_in))
        self.depthwise = DepthwiseConv2d(width_in, 5) if compiled_depthwise_grad else \
            nn.Conv2d(width_in, width_in, 5, padding=2, groups=width_in)
        self.conv1 = nn.Conv2d(width_in, width_out, 3, padding=1)
        self.conv2 = nn.Conv2d(width_out, width_out, 3, padding=1)
        self.residual = nn.Conv2d(width_in, width_out, 1) if width_in != width_out else nn.Identity()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x) + self.condition(condition)[:, :, None, None]
        h = self.conv2(F.gelu(self.conv1(h)))
        return h + self.residual(x)


class SinDDMDenoiser(nn.Module):
    """epsilon_theta(x_t, t, s) for images of any size (fully convolutional)."""

    def __init__(self, channels: int = 1, dim: int = 160, images: int = 0, compiled_depthwise_grad: bool = False,
                 blurry_input: bool = False) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        half = dim // 2
        self.channels = channels
        self.blurry_input = blurry_input
        self.image_embed: nn.Embedding | None = None
        if images > 0:
            self.image_embed = nn.Embedding(images, EMBEDDING_DIM)
            nn.init.zeros_(self.image_embed.weight)
        self.embed = nn.Sequential(nn.Linear(2 * EMBEDDING_DIM, 4 * EMBEDDING_DIM), nn.GELU(),
                                   nn.Linear(4 * EMBEDDING_DIM, EMBEDDING_DIM))
        inputs = 2 * channels if blurry_input else channels
        widths = ((inputs, half), (half, dim), (dim, dim), (dim, half))
        self.blocks = nn.ModuleList([ConditionedBlock(w_in, w_out, compiled_depthwise_grad=compiled_depthwise_grad)
                                     for w_in, w_out in widths])
        self.output = nn.Conv2d(half, channels, 1)

    @property
    def images(self) -> int:
        """Training images with their own coarsest-scale embedding (0: none, the official network)."""
        return 0 if self.image_embed is None else self.image_embed.num_embeddings

    def forward(self, x: torch.Tensor, t: torch.Tensor, scale: torch.Tensor | int,
                image: torch.Tensor | int | None = None, blurry: torch.Tensor | None = None) -> torch.Tensor:
        """`image`: the training image index per batch element (networks built with `images` > 0 only);
        `blurry`: the upsampled coarser image x~ (networks built with `blurry_input` only; None at the coarsest
        scale, which gets zeros)."""
        scale = torch.as_tensor(scale, device=x.device).expand(t.shape)
        embedding = torch.cat((sinusoidal_embedding(t), sinusoidal_embedding(scale)), dim=1)
        condition = self.embed(embedding.to(self.output.weight.dtype))
        if self.image_embed is not None:
            if image is None:
                raise ValueError("this denoiser has per-image embeddings: pass the training image index")
            index = torch.as_tensor(image, device=x.device).expand(t.shape)
            coarsest = (scale == 0).to(condition.dtype)[:, None]
            condition = condition + coarsest * self.image_embed(index).to(condition.dtype)
        if self.blurry_input:
            x = torch.cat((x, torch.zeros_like(x) if blurry is None else blurry.to(x.dtype)), dim=1)
        elif blurry is not None:
            raise ValueError("this denoiser was built without blurry_input: it takes no coarser image")
        for block in self.blocks:
            x = block(x, condition)
        return self.output(x)


def conv_flops_per_pixel(model: nn.Module) -> int:
    """Multiply-adds x 2 of every conv per output pixel (all convs here keep the resolution)."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * kh * kw * (module.in_channels // module.groups) * module.out_channels
    return total


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ConditionedBlock", "SinDDMDenoiser", "conv_flops_per_pixel", "parameter_count", "sinusoidal_embedding"]
