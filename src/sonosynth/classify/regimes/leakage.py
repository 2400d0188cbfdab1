"""Leakage guards: no evaluation image, nor anything made from one, reaches a classifier's training.

Evaluation is on real validation images only; a synthetic image made from an evaluation-fold image
is an error; the early-stopping set is held-out real TRAINING patients (or a caller's manifest
disjoint from the evaluation fold), and synthetic images made from those patients' images are left
out of fitting, so the stopping loss is never measured on parents of training images.
"""

from __future__ import annotations

import os

from sonosynth.classify.regimes.plan import only_origin
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError


def _resolved(paths) -> set[str]:
    return {os.path.realpath(p) for p in paths}


def check_synthetic_parents(synthetic: Manifest, evaluation: Manifest) -> None:
    """Refuse synthetic images made from evaluation images: they would carry the answer into training."""
    evaluation_paths = _resolved(evaluation.absolute_paths())
    leaking = [
        path for path, parents in zip(synthetic.table["path"], synthetic.parent_paths(), strict=True)
        if _resolved(parents) & evaluation_paths
    ]
    if leaking:
        raise InputDataError(
            f"{synthetic.root}: {len(leaking)} synthetic image(s) were generated from validation images of this fold "
            f"(e.g. {leaking[0]}). Generate the SyntheticSet from this fold's training images only."
        )


def drop_derived(synthetic: Manifest, held_out: Manifest) -> Manifest:
    """Synthetic rows none of whose parents is an image of `held_out` (the early-stopping set)."""
    if len(held_out) == 0:
        return synthetic
    held = _resolved(held_out.absolute_paths())
    keep = [not (_resolved(parents) & held) for parents in synthetic.parent_paths()]
    return synthetic.where(keep)


def stopping_split(train: Manifest, evaluation: Manifest, fraction: float, seed: int,
                   stop: Manifest | None = None) -> tuple[Manifest, Manifest]:
    """(fit, stop): the caller's stopping manifest (checked disjoint by patient), or one carved from training."""
    from sonosynth.classify.training import carve_stopping_set

    if stop is None:
        return carve_stopping_set(train, fraction, seed)
    only_origin(stop, "real", "early-stopping")
    shared = sorted(set(stop.table["patient_id"]) & set(evaluation.table["patient_id"]))
    if shared:
        raise InputDataError(
            f"{stop.root}: the early-stopping manifest shares patient(s) {shared[:5]} with the evaluation fold; "
            "early stopping must not see evaluation patients."
        )
    overlap = set(stop.table["patient_id"]) & set(train.table["patient_id"])
    return train.where(~train.table["patient_id"].isin(overlap)), stop
