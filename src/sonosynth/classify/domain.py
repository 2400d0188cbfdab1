"""The study's domain feature network: one small CNN that defines the feature space of SIFID/FID/KID.

Why a network trained on the study's own images: the distances compare synthetic to real images, and
a space that has learned what separates the study's classes (pleural lines, B-lines, consolidations)
moves when a generator smears or invents those structures; a random CNN does not, and ImageNet
Inception needs weights and knows no ultrasound. Why ONE network for the whole study, trained on
EVERY real image of its manifest: the per-fold real-only classifier (`features: classifier`) gives
each fold its own space, so FID 12 in fold 0 and FID 15 in fold 1 are not comparable numbers. This
network is not a classifier of the study: no result table is computed with its predictions, and no
classifier of any regime is initialised from it or selected with it. It only maps images to
features, for real and synthetic images alike, so seeing every patient leaks nothing into the
classification results, and every fold's and generator's quality rows share one space (one
checkpoint, whose sha1 each quality row records).

Training is the zoo's ordinary loop (`training.train_classifier`): `small_cnn` from scratch on the
study's classes, early stopping on whole held-out patients (`carve_stopping_set`: `stop_fraction` of
each class's patients, seeded by the config's seed), so the weights kept are those of the epoch with
the lowest cross-entropy on patients it did not fit,

    kept epoch = argmin_e  (1/|S|) * sum_{(x, y) in S} -log softmax(f_e(x))_y,   S = stopping patients' images.

An interrupted training continues at its next epoch (the loop's state file), with the same result.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from sonosynth.atomic import write_text_atomic
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError
from sonosynth.hashing import file_sha1

DOMAIN_MODEL = "small_cnn"  # the zoo's smallest network: from scratch, grayscale, no weights to download
DOMAIN_CHECKPOINT = "model.pt"
DOMAIN_RECORD = "domain.json"
DOMAIN_LOSSES = "losses.csv"


@dataclass(frozen=True)
class DomainNetwork:
    """What `train_domain_network` wrote: the checkpoint, and how it was trained (also in domain.json)."""

    checkpoint: str  # the file's name inside the output folder
    sha1: str  # sha1 of the checkpoint file (its first 12 characters are the quality rows' features_sha1)
    model: str
    classes: list[str]
    images: int
    patients: int
    stop_patients: list[str]
    stop_images: int
    best_epoch: int
    epochs_run: int
    stop_accuracy: float | None  # accuracy on the stopping patients: a sanity number, not a study result


def train_domain_network(real: Manifest, out: str | os.PathLike, config, device: str = "auto",
                         progress: bool = True) -> DomainNetwork:
    """Train `small_cnn` on the real images of `real` into `out/model.pt` (config: a ClassifierTrainConfig)."""
    from sonosynth.classify import create_classifier, save_classifier
    from sonosynth.classify.augment import regular_augmentation
    from sonosynth.classify.data import ManifestDataset
    from sonosynth.classify.training import (
        carve_stopping_set,
        predict_probabilities,
        seed_everything,
        train_classifier,
    )
    from sonosynth.device import resolve_device

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real = real.where(real.table["origin"] == "real")
    classes = sorted(set(real.labels))
    if len(classes) < 2:
        raise InputDataError(f"{real.root}: the domain feature network needs real images of at least two classes "
                             f"(found {classes or 'none'}); set quality.features to random_cnn or inception.")
    fit, stop = carve_stopping_set(real, config.stop_fraction, config.seed)
    torch_device = resolve_device(device)
    augment = regular_augmentation(config.augmentation) if config.augment_real else None
    fit_data = ManifestDataset(fit, classes, config.image_size, config.in_channels, augment=augment)
    stop_data = ManifestDataset(stop, classes, config.image_size, config.in_channels) if len(stop) else None

    seed_everything(config.seed)
    model = create_classifier(DOMAIN_MODEL, len(classes), in_channels=config.in_channels, pretrained="none",
                              image_size=config.image_size)
    result = train_classifier(model, fit_data, stop_data, config, torch_device, stage="train",
                              losses_csv=out / DOMAIN_LOSSES, state_path=out / ".train-state.pt", progress=progress)
    stop_accuracy = None
    if stop_data is not None:
        probabilities = predict_probabilities(model, stop_data, torch_device, batch_size=max(config.batch_size, 64))
        stop_accuracy = float((probabilities.argmax(axis=1) == stop_data.targets).mean())
    checkpoint = out / DOMAIN_CHECKPOINT
    save_classifier(checkpoint, model, classes,
                    extra={"role": "domain features", "train_config": config.model_dump(),
                           "best_epoch": result.best_epoch})
    network = DomainNetwork(
        DOMAIN_CHECKPOINT, file_sha1(checkpoint), DOMAIN_MODEL, classes, len(real),
        int(real.table["patient_id"].nunique()), sorted(set(stop.table["patient_id"].astype(str))), len(stop),
        result.best_epoch, len(result.history), stop_accuracy)
    write_text_atomic(out / DOMAIN_RECORD, json.dumps(asdict(network), indent=2) + "\n")
    return network


__all__ = ["DOMAIN_CHECKPOINT", "DOMAIN_MODEL", "DOMAIN_RECORD", "DomainNetwork", "train_domain_network"]
