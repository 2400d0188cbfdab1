"""SSIM as the lung study reports it: Gaussian window 11, sigma 1.5, data in [0, 1].

MONAI's `compute_ssim_and_cs` convolves without padding, so its SSIM map covers only positions where the
whole 11 x 11 window lies inside the image. scikit-image's `structural_similarity` filters with reflected
borders and then crops (win_size - 1) / 2 = 5 pixels on each side before averaging, which leaves exactly
the same positions, each computed from in-image pixels only. With the population covariance
(`use_sample_covariance=False`) both give the same number up to float32 rounding (about 1e-6); libraries
that average the padded border (torchmetrics) do not. tests/metrics/test_quality.py checks the agreement.
"""

from __future__ import annotations

import numpy as np
import torch

from sonosynth.errors import InputDataError
from sonosynth.metrics.quality.images import resize

WINDOW = 11
SIGMA = 1.5


def ssim_batch(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean SSIM of each pair: (N, H, W) and (N, H, W) in [0, 1] -> (N,)."""
    from monai.metrics.regression import compute_ssim_and_cs

    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim_batch needs two (N, H, W) stacks of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < WINDOW:
        raise InputDataError(f"SSIM needs images of at least {WINDOW} x {WINDOW} pixels, got {tuple(a.shape[-2:])}.")
    ssim_map, _ = compute_ssim_and_cs(a[:, None], b[:, None], spatial_dims=2, kernel_size=[WINDOW, WINDOW],
                                      kernel_sigma=[SIGMA, SIGMA], data_range=1.0)
    return ssim_map.mean(dim=(1, 2, 3)).double().numpy()


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two same-size (H, W) images in [0, 1]."""
    return float(ssim_batch(np.asarray(a)[None], np.asarray(b)[None])[0])


def ssim_to_source(synthetic: np.ndarray, source: np.ndarray) -> float:
    """SSIM of a synthetic image against its real source.

    A generator may sample at another size than its training image (SinGAN/SinDDM can change the aspect);
    the synthetic image is resized to the source's size, so the real image is never resampled.
    """
    return ssim(resize(synthetic, source.shape), source)
