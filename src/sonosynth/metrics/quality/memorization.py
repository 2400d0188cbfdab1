"""Memorization audit: is a synthetic image a copy of a patient's image?

Every synthetic image is matched to its nearest real image by normalised cross-correlation at a common
size (one matrix product over unit vectors), then compared with that match by SSIM at the real image's
size. Images whose NCC exceeds the threshold are flagged as near-copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonosynth.data.manifest import Manifest
from sonosynth.metrics.quality.images import ImageStore
from sonosynth.metrics.quality.ncc import nearest, unit_vectors
from sonosynth.metrics.quality.ssim import ssim_to_source
from sonosynth.progress import track


@dataclass(frozen=True)
class MemorizationAudit:
    details: pd.DataFrame  # one row per synthetic image
    most_copied: pd.DataFrame  # one row per real image that is some synthetic image's nearest neighbour


def _relative(manifest: Manifest, paths: list) -> list[str]:
    return [os.path.relpath(p, manifest.root) for p in paths]


def audit_memorization(synthetic: Manifest, real: Manifest, store: ImageStore | None = None,
                       threshold: float = 0.95, size: int = 128, top: int = 20,
                       progress: bool = False) -> MemorizationAudit:
    """Nearest real image, NCC, SSIM and the near-copy flag for each synthetic image."""
    store = store or ImageStore()
    real_paths, synthetic_paths = real.absolute_paths(), synthetic.absolute_paths()
    real_vectors = unit_vectors(store.get_many(list(track(real_paths, "read real images", enabled=progress))), size)
    synthetic_vectors = unit_vectors(store.get_many(synthetic_paths), size)
    index, ncc = nearest(synthetic_vectors, real_vectors)
    matches = [real_paths[i] for i in index]
    ssims = [ssim_to_source(store.get(s), store.get(r))
             for s, r in track(list(zip(synthetic_paths, matches, strict=True)), "SSIM to nearest real image",
                               enabled=progress)]
    table = synthetic.table
    details = pd.DataFrame({
        "path": table["path"].astype(str).to_numpy(),
        "generator": table["generator"].astype(str).to_numpy(),
        "checkpoint": table["checkpoint"].astype(object).to_numpy(),
        "label": table["label"].astype(str).to_numpy(),
        "nearest_real": _relative(real, matches),
        "nearest_label": real.table["label"].to_numpy()[index],
        "nearest_patient": real.table["patient_id"].to_numpy()[index],
        "ncc": ncc,
        "ssim": ssims,
        "flagged": ncc > threshold,
    })
    return MemorizationAudit(details, most_copied(details, top))


def most_copied(details: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """Real images ranked by how many synthetic images are flagged copies of them, then by closeness."""
    if details.empty:
        return pd.DataFrame(columns=["nearest_real", "nearest_patient", "copies", "nearest_of", "max_ncc", "generators"])
    grouped = details.groupby("nearest_real", sort=False)
    ranking = pd.DataFrame({
        "nearest_patient": grouped["nearest_patient"].first(),
        "copies": grouped["flagged"].sum().astype(int),
        "nearest_of": grouped.size(),
        "max_ncc": grouped["ncc"].max(),
        "generators": grouped["generator"].agg(lambda g: ",".join(sorted(set(g)))),
    }).reset_index()
    ranking = ranking.sort_values(["copies", "max_ncc"], ascending=False, kind="stable")
    return ranking.head(top).reset_index(drop=True)


def copy_rates(details: pd.DataFrame) -> pd.DataFrame:
    """Per generator: flagged copies and their fraction."""
    grouped = details.groupby("generator")["flagged"]
    return pd.DataFrame({"copies": grouped.sum().astype(int), "copy_rate": grouped.mean()})


def paired_sources(synthetic: Manifest, store: ImageStore, size: int = 128) -> list[Path | None]:
    """The real image each synthetic image is compared with: its parent, or its closest parent when there are several.

    Single-image generators (SinGAN, SinDDM) have one parent. A model trained on many images lists them
    all; the parent most correlated with the sample (by NCC) is the image it was most likely drawn towards.
    Rows without parents get None.
    """
    parents_per_row = synthetic.parent_paths()
    sources: list[Path | None] = [p[0] if len(p) == 1 else None for p in parents_per_row]
    groups: dict[tuple[Path, ...], list[int]] = {}
    for row, parents in enumerate(parents_per_row):
        if len(parents) > 1:
            groups.setdefault(tuple(parents), []).append(row)
    paths = synthetic.absolute_paths()
    for parents, rows in groups.items():
        candidates = unit_vectors(store.get_many(list(parents)), size)
        best, _ = nearest(unit_vectors(store.get_many([paths[r] for r in rows]), size), candidates)
        for row, b in zip(rows, best, strict=True):
            sources[row] = parents[int(b)]
    return sources
