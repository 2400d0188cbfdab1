"""Diversity of one model's samples, next to the same figure for random crops of its training images.

A generator that collapses to a few modes produces samples that are more alike than two random crops
of the image it learned from; putting both numbers side by side makes that visible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist

from sonosynth.data.manifest import Manifest
from sonosynth.metrics.quality.features import FeatureExtractor, pooled_features
from sonosynth.metrics.quality.images import ImageStore, random_crops, resize
from sonosynth.metrics.quality.ssim import ssim_batch
from sonosynth.progress import track

PAIR_CHUNK = 256  # SSIM pairs per batch, bounding memory


def mean_pairwise_dissimilarity(images: list[np.ndarray]) -> float:
    """1 - mean SSIM over all pairs; images are resized to the first one's size."""
    if len(images) < 2:
        return float("nan")
    stack = np.stack([resize(image, images[0].shape) for image in images])
    first, second = np.triu_indices(len(images), k=1)
    values = [ssim_batch(stack[first[i:i + PAIR_CHUNK]], stack[second[i:i + PAIR_CHUNK]])
              for i in range(0, len(first), PAIR_CHUNK)]
    return float(1.0 - np.concatenate(values).mean())


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of (n, D) feature vectors."""
    return float(pdist(np.asarray(features, dtype=np.float64)).mean()) if len(features) >= 2 else float("nan")


def checkpoint_diversity(synthetic: Manifest, features: np.ndarray, extractor: FeatureExtractor,
                         store: ImageStore | None = None, max_samples: int = 32, crop_fraction: float = 0.8,
                         seed: int = 0, batch_size: int = 16, progress: bool = False) -> pd.DataFrame:
    """One row per (generator, checkpoint): sample diversity and the reference from random training crops.

    `features` are the pooled features of the synthetic rows, in manifest order.
    """
    store = store or ImageStore()
    rng = np.random.default_rng(seed)
    table = synthetic.table
    keys = table["checkpoint"].astype(object).where(table["checkpoint"].notna(), "")
    paths, parents = synthetic.absolute_paths(), synthetic.parent_paths()
    rows = []
    groups = list(table.groupby([table["generator"].astype(str), keys], sort=True).indices.items())
    for (generator, checkpoint), indices in track(groups, "diversity per checkpoint", enabled=progress):
        chosen = np.sort(rng.choice(indices, size=min(max_samples, len(indices)), replace=False))
        samples = store.get_many([paths[i] for i in chosen])
        row = {"generator": generator, "checkpoint": checkpoint or pd.NA, "samples": len(chosen),
               "diversity_ssim": mean_pairwise_dissimilarity(samples),
               "diversity_feature": mean_pairwise_distance(features[chosen]),
               "crops_diversity_ssim": float("nan"), "crops_diversity_feature": float("nan")}
        training = list(dict.fromkeys(p for i in chosen for p in parents[i]))
        if training and len(chosen) >= 2:
            crops = random_crops(store.get_many(training), len(chosen), crop_fraction, samples[0].shape, rng)
            row["crops_diversity_ssim"] = mean_pairwise_dissimilarity(crops)
            row["crops_diversity_feature"] = mean_pairwise_distance(pooled_features(extractor, crops, batch_size))
        rows.append(row)
    return pd.DataFrame(rows)
