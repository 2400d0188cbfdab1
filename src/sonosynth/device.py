"""Choosing the compute device and the reduced-precision context for it."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Literal

import torch

from sonosynth.errors import SonosynthError

Precision = Literal["fp32", "bf16", "fp16"]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` takes the first CUDA GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SonosynthError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu.")
    return device


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix units (AMX or AVX512-BF16), where bf16 pays off."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """'auto' -> bf16 where the hardware has fast bf16 (CUDA with bf16, AMX/AVX512-BF16 CPUs), else fp32."""
    if precision != "auto":
        return precision  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def _warn_emulated_bf16() -> None:
    if not cpu_supports_bf16():
        logging.getLogger(__name__).warning(
            "precision bf16 on a CPU without native bf16 (no AMX or AVX512-BF16): bf16 is emulated here and "
            "runs many times slower than fp32. "
            "Use precision: auto (fp32 on this CPU) or fp32.")


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The autocast context for a precision; fp32 is a no-op so the math stays exactly the baseline."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        # 'auto' reaching here once meant fp16 on the CPU, 10x slower than fp32: resolve it first.
        raise SonosynthError(f"precision {precision!r} is not one of fp32, bf16, fp16 (resolve 'auto' before "
                             "entering autocast).")
    if device.type == "cpu" and precision == "fp16":
        raise SonosynthError("fp16 autocast is for GPUs; on the CPU use bf16 or fp32.")
    if device.type == "cpu" and precision == "bf16":
        _warn_emulated_bf16()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def hardware_summary() -> str:
    """CPU cores and GPUs of this machine, for the log and the report."""
    import os
    import platform

    cores = os.cpu_count() or 1
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    text = f"{model}, {cores} CPU core{'s' if cores != 1 else ''}"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        text += ", GPU: " + ", ".join(names)
    else:
        text += ", no GPU"
    return text
