"""The depthwise convolution with the compiled weight gradient: the same layer and gradients as nn.Conv2d."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sonosynth.generators.sinddm import depthwise
from sonosynth.generators.sinddm.depthwise import DepthwiseConv2d, depthwise_weight_grad_reference
from sonosynth.generators.sinddm.network import SinDDMDenoiser


def _pair(channels: int = 6, dtype=torch.float64):
    torch.manual_seed(0)
    stock = nn.Conv2d(channels, channels, 5, padding=2, groups=channels).to(dtype)
    fast = DepthwiseConv2d(channels, 5).to(dtype)
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def _grads(layer, x):
    x = x.clone().requires_grad_(True)
    out = layer(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), x.grad, layer.weight.grad, layer.bias.grad


def test_same_parameters_output_and_gradients_as_the_stock_layer_in_float64():
    stock, fast = _pair()
    x = torch.randn(3, 6, 19, 23, dtype=torch.float64)
    for a, b in zip(_grads(stock, x), _grads(fast, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert list(fast.state_dict()) == list(stock.state_dict())


def test_bf16_autocast_channels_last_gradients_match_the_stock_layer():
    stock, fast = _pair(8, torch.float32)
    x = torch.randn(4, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, got = _grads(stock, x), _grads(fast, x)
    for a, b in zip(ref, got, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2 * a.float().abs().max().item())


def test_reference_weight_gradient_is_the_shifted_product_sum():
    torch.manual_seed(1)
    x, grad = torch.randn(2, 3, 9, 11, dtype=torch.float64), torch.randn(2, 3, 9, 11, dtype=torch.float64)
    weight = torch.zeros(3, 1, 5, 5, dtype=torch.float64)
    stock = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [2, 2], [1, 1], False, [0, 0], 3,
                                                [False, True, False])[1]
    torch.testing.assert_close(depthwise_weight_grad_reference(x, grad, 5).reshape(3, 1, 5, 5), stock)


def test_without_a_compiler_the_stock_gradient_is_used(monkeypatch):
    def broken(fn, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(depthwise, "_compiled", None)
    monkeypatch.setattr(depthwise, "_compile_failed", False)
    monkeypatch.setattr(depthwise.torch, "compile", broken)
    stock, fast = _pair()
    x = torch.randn(2, 6, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(_grads(stock, x)[2], _grads(fast, x)[2])
    assert depthwise._compile_failed


@pytest.mark.parametrize("compiled", [False, True])
def test_denoiser_state_dicts_load_across_the_switch(compiled):
    other = SinDDMDenoiser(1, 8, compiled_depthwise_grad=not compiled)
    net = SinDDMDenoiser(1, 8, compiled_depthwise_grad=compiled)
    net.load_state_dict(other.state_dict())
    assert isinstance(net.blocks[1].depthwise, DepthwiseConv2d) == compiled
