"""A depthwise convolution whose weight gradient is fast on the CPU; the same math as `nn.Conv2d(groups=C)`.

Profiling SinDDM's training step on a 2-core CPU (bf16, channels-last, dim 64, batch 8, 128 px) showed
`convolution_backward` taking over 80% of the step, almost all of it oneDNN's weight gradient of the
three depthwise 5x5 convolutions: 240 ms for one 64-channel layer, against 3 ms for its forward pass and
9 ms for its input gradient, for about 1% of the step's FLOPs (benchmarks/sinddm_speed.py measures it).

The weight gradient of a depthwise k x k convolution with padding p is, per channel c and tap (i, j),

    dL/dw[c, i, j] = sum over b, y, x of  x_pad[b, c, y + i, x + j] * g[b, c, y, x]

(g = dL/dy). On the CPU this is computed here as k*k fused multiply-reduce loops that inductor
(`torch.compile`) writes in C++, accumulating in float32; the forward pass and the input gradient stay
oneDNN's. Only the rounding differs from the stock layer (tested against it in float64). Where the
compiled kernel is not available (no C++ compiler) or the tensors are not on the CPU, the stock
gradient is used, so the layer is always correct and at worst as fast as `nn.Conv2d`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

_compiled: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None = None
_compile_failed = False


def depthwise_weight_grad_reference(x: torch.Tensor, grad: torch.Tensor, kernel: int) -> torch.Tensor:
    """(C, k*k) float32 (float64 for float64 inputs) weight gradient as k*k shifted products, each summed over batch and pixels."""
    pad = kernel // 2
    height, width = grad.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.stack([(padded[:, :, i:i + height, j:j + width].to(acc) * grad.to(acc)).sum((0, 2, 3))
                        for i in range(kernel) for j in range(kernel)], dim=1)


def _weight_grad_kernel() -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None:
    """The compiled reference (one compile, symbolic shapes), or None when inductor cannot build it."""
    global _compiled, _compile_failed
    if _compiled is None and not _compile_failed:
        try:
            _compiled = torch.compile(depthwise_weight_grad_reference, dynamic=True)
        except Exception as exc:  # noqa: BLE001 - any compiler trouble falls back to the stock gradient
            _compile_failed = True
            log.warning("depthwise weight gradient: torch.compile unavailable (%s); using the stock gradient", exc)
    return _compiled


def _stock_weight_grad(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, groups: int) -> torch.Tensor:
    pad = weight.shape[-1] // 2
    return torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
                                               groups, [False, True, False])[1]


def fast_weight_grad(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """dL/dw of a depthwise conv, shaped like `weight`; compiled on the CPU, stock elsewhere or on failure."""
    global _compile_failed
    channels, kernel = weight.shape[0], weight.shape[-1]
    kernel_fn = _weight_grad_kernel() if x.device.type == "cpu" else None
    if kernel_fn is not None:
        try:
            return kernel_fn(x, grad, kernel).reshape(channels, 1, kernel, kernel).to(weight.dtype)
        except Exception as exc:  # noqa: BLE001 - a failed build (no compiler) must not stop training
            _compile_failed = True
            log.warning("depthwise weight gradient: compiled kernel failed (%s); using the stock gradient",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return _stock_weight_grad(x, weight, grad, channels).to(weight.dtype)


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    device = tensors[0].device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensors[0].dtype


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x, weight)
        xc, wc, bc = x.to(dtype), weight.to(dtype), bias.to(dtype)
        ctx.save_for_backward(xc, wc)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(xc, wc, bc, padding=weight.shape[-1] // 2, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        grad = grad.to(x.dtype)
        pad = weight.shape[-1] // 2
        grad_x = grad_w = grad_b = None
        with torch.autocast(x.device.type, enabled=False):
            if ctx.needs_input_grad[0]:
                grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, [1, 1], [pad, pad], [1, 1], False,
                                                             [0, 0], weight.shape[0], [True, False, False])[0]
                grad_x = grad_x.to(x_dtype)
            if ctx.needs_input_grad[1]:
                grad_w = fast_weight_grad(x, weight, grad).to(w_dtype)
            if ctx.needs_input_grad[2]:
                acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
                grad_b = grad.sum((0, 2, 3), dtype=acc).to(b_dtype)
        return grad_x, grad_w, grad_b


class DepthwiseConv2d(nn.Conv2d):
    """`nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)` (same parameters and
    state-dict keys), with the fast weight gradient while training on the CPU."""

    def __init__(self, channels: int, kernel: int = 5) -> None:
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        super().__init__(channels, channels, kernel, padding=kernel // 2, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad and x.device.type == "cpu":
            return _DepthwiseConv.apply(x, self.weight, self.bias)
        return super().forward(x)


__all__ = ["DepthwiseConv2d", "depthwise_weight_grad_reference", "fast_weight_grad"]
