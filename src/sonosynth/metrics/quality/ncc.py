"""Normalised cross-correlation between whole images, vectorised: images as unit vectors, one matrix product."""

from __future__ import annotations

import numpy as np

from sonosynth.metrics.quality.images import resize

CHUNK = 512  # query rows per matrix product, bounding memory for large sets


def unit_vectors(images: list[np.ndarray], size: int) -> np.ndarray:
    """Each image resized to size x size, mean removed, scaled to norm 1: (n, size * size) float32.

    The dot product of two such vectors is their NCC. A constant image has no pattern to match and
    becomes the zero vector (NCC 0 with everything).
    """
    if not images:
        return np.zeros((0, size * size), dtype=np.float32)
    vectors = np.stack([resize(image, (size, size)).ravel() for image in images]).astype(np.float64)
    vectors -= vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 1e-12)
    return vectors.astype(np.float32)


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query vector, the index of the reference with the highest NCC, and that NCC."""
    if len(references) == 0:
        raise ValueError("no reference images to compare with")
    index = np.empty(len(queries), dtype=np.int64)
    score = np.empty(len(queries), dtype=np.float64)
    for start in range(0, len(queries), CHUNK):
        similarity = queries[start:start + CHUNK] @ references.T
        best = similarity.argmax(axis=1)
        index[start:start + CHUNK] = best
        score[start:start + CHUNK] = similarity[np.arange(len(best)), best]
    return index, np.clip(score, -1.0, 1.0)
