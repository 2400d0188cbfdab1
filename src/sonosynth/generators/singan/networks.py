"""SinGAN's per-scale networks: a residual patch generator and a Markovian (patch) critic.

Both are `num_layers` 3x3 convolutions without padding (the input is zero-padded once by the
caller), each but the last followed by batch norm and LeakyReLU(0.2). Widths follow the reference:
the first block has `channels` filters and the inner blocks halve it, never below `min_channels`
(with the defaults every block has the same width). No I/O here.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def _block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=1, padding=0), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.2, inplace=True))


def _body(image_channels: int, channels: int, min_channels: int, num_layers: int, kernel: int) -> tuple[nn.Sequential, int]:
    layers = [_block(image_channels, channels, kernel)]
    width = channels
    for i in range(num_layers - 2):
        inner = int(channels / 2 ** (i + 1))
        layers.append(_block(max(2 * inner, min_channels), max(inner, min_channels), kernel))
        width = max(inner, min_channels)
    return nn.Sequential(*layers), width


def border(num_layers: int, kernel: int) -> int:
    """Pixels each side that the unpadded convolutions eat: the zero padding the inputs need."""
    return (kernel - 1) * num_layers // 2


class ScaleGenerator(nn.Module):
    """Maps (noise + upsampled previous image, padded) to previous image + a learned residual."""

    def __init__(self, image_channels: int, channels: int, min_channels: int, num_layers: int = 5, kernel: int = 3):
        super().__init__()
        self.body, width = _body(image_channels, channels, min_channels, num_layers, kernel)
        self.tail = nn.Sequential(nn.Conv2d(width, image_channels, kernel, stride=1, padding=0), nn.Tanh())

    def forward(self, noisy: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        residual = self.tail(self.body(noisy))
        cut_h = (previous.shape[-2] - residual.shape[-2]) // 2
        cut_w = (previous.shape[-1] - residual.shape[-1]) // 2
        return residual + previous[..., cut_h: previous.shape[-2] - cut_h, cut_w: previous.shape[-1] - cut_w]


class PatchDiscriminator(nn.Module):
    """A fully convolutional critic: one WGAN score per overlapping patch (receptive field 11 px by default)."""

    def __init__(self, image_channels: int, channels: int, min_channels: int, num_layers: int = 5, kernel: int = 3):
        super().__init__()
        self.body, width = _body(image_channels, channels, min_channels, num_layers, kernel)
        self.tail = nn.Conv2d(width, 1, kernel, stride=1, padding=0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(image))


def build(kind: type[nn.Module], image_channels: int, channels: int, min_channels: int, num_layers: int,
          kernel: int, rng: torch.Generator) -> nn.Module:
    """A freshly initialised network, drawing every initial weight from `rng` (not the global RNG).

    Initialisation as in the reference: conv weights N(0, 0.02), batch-norm scales N(1, 0.02) and
    shifts 0; conv biases keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    with torch.random.fork_rng(devices=[]):  # construction draws default weights we overwrite anyway
        net = kind(image_channels, channels, min_channels, num_layers, kernel)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=rng)
                fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
                bound = 1.0 / fan_in ** 0.5
                nn.init.uniform_(module.bias, -bound, bound, generator=rng)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02, generator=rng)
                nn.init.zeros_(module.bias)
    return net


def frozen(net: nn.Module) -> nn.Module:
    """Eval mode (batch norm uses its running statistics) and no gradients: a trained lower scale."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@contextlib.contextmanager
def no_param_grads(net: nn.Module):
    """Skip parameter gradients of `net` while still backpropagating through it (the critic in a G step)."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p, flag in zip(net.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, weight: float,
                     rng: torch.Generator) -> torch.Tensor:
    """WGAN-GP on one random interpolation of real and fake.

    As in the reference, the gradient norm is taken over the channel axis at every pixel and the
    squared deviations from 1 are averaged over pixels (a per-pixel penalty for a patch critic).
    """
    mix = torch.rand(1, 1, generator=rng).item()
    between = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    scores = critic(between)
    (grads,) = torch.autograd.grad(scores, between, grad_outputs=torch.ones_like(scores), create_graph=True)
    return ((grads.norm(2, dim=1) - 1) ** 2).mean() * weight
