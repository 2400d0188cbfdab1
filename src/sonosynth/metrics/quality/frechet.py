"""Distances between feature distributions: the Fréchet distance (FID, SIFID) and KID."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

# Diagonal offset used when sigma1 @ sigma2 is too close to singular for a clean square root: with fewer
# feature vectors than dimensions (a 64 px image has ~150 positions for 192 SIFID channels; 40 images
# give a 2048 x 2048 FID covariance of rank 39) the covariances are rank deficient.
SINGULAR_EPS = 1e-6
# Relative error of sqrtm(A)^2 vs A beyond which the offset is applied.
SQRTM_TOLERANCE = 1e-4


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (n, d) feature vectors (n >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need at least two (n, d) feature vectors, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[np.ndarray, float]:
    product = sigma1 @ sigma2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular input; the error is measured below instead
        root = linalg.sqrtm(product)
    if not np.all(np.isfinite(root)):
        return root, np.inf
    scale = max(float(np.linalg.norm(product)), np.finfo(float).tiny)
    return root, float(np.linalg.norm(root @ root - product)) / scale


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = SINGULAR_EPS) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    The product of two rank-deficient covariances may have no accurate square root; then, as in the
    reference FID code, eps * I is added to both covariances and the root recomputed. A small imaginary
    part from rounding is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    root, error = _sqrtm_product(sigma1, sigma2)
    if error > SQRTM_TOLERANCE:
        offset = np.eye(sigma1.shape[0]) * eps
        root, _ = _sqrtm_product(sigma1 + offset, sigma2 + offset)
    root = np.real(root)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root))


def feature_frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (n, d) feature sets."""
    return frechet_distance(*gaussian_statistics(features1), *gaussian_statistics(features2))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, mean and std over subsets.

    Unlike FID it is unbiased for small sets, which is why it is reported next to FID for few-image studies.
    """
    x, y = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least two feature vectors on each side")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = _polynomial_kernel(xs, xs), _polynomial_kernel(ys, ys), _polynomial_kernel(xs, ys)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2.0 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))
