"""Which of a fold's candidate training images a capped generator learns from.

A CPU-sized study caps its generators (`max_models`, `max_images_per_model`), so each fold trains on a
few of its candidate images. `GeneratorSpec.image_choice` says which few:

- `first`: manifest order (source path, then frame index), as the candidates come.
- `typical`: the most typical images of each class first. An image's atypicality is its mean
  correlation distance to the other candidates of its class,

      a(i) = mean_{j != i} (1 - r(t_i, t_j)),

  where t is the image as a 32x32 grey thumbnail (antialiased bilinear, aspect not kept) and r is Pearson's
  correlation over its pixels, so the probe's footprint and the anatomy's layout count, not the gain
  (a plain pixel distance would call a nearly black frame typical: it is close to everything).
  Smallest a(i) first, ties in manifest order. Typical images resemble one another, so a few-image
  model (FewDDM) learns one probe geometry instead of blending a convex fan, a linear-probe strip and a
  dark, nearly empty frame into one, and single-image models learn from images that look like most of
  the class rather than from an outlier.

Only the generator's own candidates (its fold's training side) are compared, so the choice uses nothing
from the validation fold. The lung study had no such choice to make: it trained on every pneumonia still.
"""

from __future__ import annotations

import functools

import numpy as np

from sonosynth.data.manifest import Manifest
from sonosynth.metrics.quality.images import ImageStore, resize

THUMBNAIL = 32


@functools.lru_cache(maxsize=4096)
def thumbnail(path: str) -> np.ndarray:
    """The image at THUMBNAIL x THUMBNAIL in [0, 1], resized as every metric resizes; cached, because
    every fold and every capped generator of a plan ranks mostly the same images."""
    return resize(ImageStore().get(path), (THUMBNAIL, THUMBNAIL))


def atypicality(thumbnails: np.ndarray) -> np.ndarray:
    """a(i): each thumbnail's mean correlation distance to the others; 0 for a lone image."""
    n = len(thumbnails)
    if n < 2:
        return np.zeros(n)
    flat = thumbnails.reshape(n, -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    # A uniform image has no pattern to correlate: it correlates with nothing (r = 0).
    flat = np.divide(flat, norms, out=np.zeros_like(flat), where=norms > 0)
    distances = 1.0 - flat @ flat.T
    np.fill_diagonal(distances, 0.0)
    return distances.sum(axis=1) / (n - 1)


def typical_first(images: Manifest) -> Manifest:
    """`images` reordered class by class (classes in manifest order), most typical image first."""
    labels = images.table["label"].astype(str).to_numpy()
    paths = images.absolute_paths()
    order: list[int] = []
    for label in dict.fromkeys(labels):
        members = np.flatnonzero(labels == label)
        scores = atypicality(np.stack([thumbnail(str(paths[i])) for i in members]))
        order += [int(members[k]) for k in np.argsort(scores, kind="stable")]
    return Manifest(images.table.iloc[order].reset_index(drop=True), images.root)


def choose(images: Manifest, rule: str) -> Manifest:
    """The candidates in the order `rule` (first | typical) fills the caps with."""
    if rule == "typical" and len(images) > 1:
        return typical_first(images)
    return images
