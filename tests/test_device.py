"""Device and precision helpers."""

from __future__ import annotations

import pytest
import torch

from sonosynth.device import autocast, resolve_device
from sonosynth.errors import SonosynthError


def test_autocast_fp32_is_a_no_op_and_bf16_casts_matmuls():
    cpu = torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16


@pytest.mark.parametrize("precision", ["auto", "float16", ""])
def test_autocast_refuses_an_unresolved_or_unknown_precision(precision):
    # 'auto' used to fall through to fp16, which on the CPU is ten times slower than fp32
    with pytest.raises(SonosynthError, match="resolve 'auto'"):
        autocast(torch.device("cpu"), precision)


def test_autocast_refuses_fp16_on_the_cpu_and_cuda_without_a_gpu():
    with pytest.raises(SonosynthError, match="bf16 or fp32"):
        autocast(torch.device("cpu"), "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(SonosynthError, match="--device cpu"):
            resolve_device("cuda")
