"""The study's units of work as plain module-level functions (so worker processes can run them).

Each takes its inputs (already resolved: typed configs, Manifests, upstream unit folders) and the
unit's cache folder as the last argument, writes its outputs there, and returns nothing; no study
logic lives here, only the call into the library stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sonosynth.atomic import write_csv_atomic
from sonosynth.data.manifest import Manifest, concat
from sonosynth.data.split import FoldData
from sonosynth.experiment import outputs
from sonosynth.experiment.spec import QualitySpec, StudyClassifierSpec


def fit_unit(kind: str, config: BaseModel, images: Manifest, device: str, progress: bool, folder: Path) -> None:
    """Train one generator model on `images` into `folder/model` (the generator resumes a partial folder)."""
    from sonosynth.generators.base import create_generator

    create_generator(kind).fit(images, folder / "model", config, device=device, resume=True, progress=progress)


def sample_unit(kind: str, checkpoint: Path, n: int, label: str, settings: dict[str, Any], device: str,
                seed: int, folder: Path) -> None:
    from sonosynth.generators.base import create_generator

    samples = create_generator(kind).sample(checkpoint, n, folder / "samples", label=label, seed=seed, device=device,
                                            progress=False, **settings)
    _samples_to_tensorboard(samples)


def _samples_to_tensorboard(samples: Manifest, count: int = 16) -> None:
    """A grid of the unit's first samples in its TensorBoard run (nothing without TensorBoard)."""
    from sonosynth import tensorboard_events

    if not tensorboard_events.active() or len(samples) == 0:
        return
    import numpy as np

    from sonosynth.data.grid import image_grid
    from sonosynth.data.images import load_grayscale

    images = [load_grayscale(path) for path in samples.absolute_paths()[:count]]
    rows = [(samples.labels[0], images[i:i + 8]) for i in range(0, len(images), 8)]
    tensorboard_events.image("samples", np.asarray(image_grid(rows, tile=96)))


def synthetic_set(sample_folders: tuple[Path, ...], root: Path) -> Manifest:
    """The SyntheticSet that the sample units' outputs make together, in plan order, relative to `root`."""
    return concat([Manifest.read(folder) for folder in sample_folders], root)


def classify_unit(regime: str, classifier: StudyClassifierSpec, config: BaseModel, train: Manifest,
                  validation: Manifest, synthetic: tuple[Path, ...] | None, run_folder: Path, stop: Manifest,
                  device: str, progress: bool, folder: Path) -> None:
    """Train one classifier under one regime (early stopping on `stop`) and score it on the real validation fold."""
    regime_unit(regime, classifier.model, config, train, validation,
                synthetic_set(synthetic, run_folder) if synthetic else None, stop if len(stop) else None,
                classifier.pretrained, classifier.weights, device, progress, folder, classifier.options or None)


def regime_unit(regime: str, model: str, config: BaseModel, train: Manifest, validation: Manifest,
                synthetic: Manifest | None, stop: Manifest | None, pretrained: str, weights: Path | None,
                device: str, progress: bool, folder: Path, model_options: dict[str, Any] | None = None) -> None:
    """`run_regime` into the unit folder (the `classify` command's unit, and the study's through classify_unit)."""
    from sonosynth.classify.regimes import run_regime

    run_regime(regime, model, FoldData(train, validation), folder, config, synthetic=synthetic, stop=stop,
               pretrained=pretrained, weights=weights, device=device, progress=progress, model_options=model_options)


def features_unit(config: BaseModel, real: Manifest, device: str, progress: bool, folder: Path) -> None:
    """The study's domain feature network (`quality.features: domain`) on all its real images, into `folder/model.pt`."""
    from sonosynth.classify.domain import train_domain_network

    train_domain_network(real, folder, config, device=device, progress=progress)


# How each network-backed feature space is named in quality.csv's `features` column (before its checkpoint).
CHECKPOINT_FEATURES = {"classifier": "classifier", "domain": "domain network"}


def quality_unit(synthetic: tuple[Path, ...], run_folder: Path, real: Manifest, quality: QualitySpec,
                 metrics: BaseModel, classifier_dir: Path | None, device: str, held_out: Manifest | None,
                 folder: Path) -> None:
    """Image-quality, memorization and automatic-reader metrics of one synthetic set.

    `real` is the fold's training side; the reader's real images are `held_out` (the validation fold)
    plus the training patients no synthetic image came from. `classifier_dir` is the upstream unit whose
    `model.pt` is the feature network: the study's `features` unit (domain) or the fold's real-only
    classifier (classifier); None for random_cnn and inception. `metrics` is the resolved QualityConfig.
    """
    from sonosynth.classify.features import feature_extractor
    from sonosynth.device import resolve_device
    from sonosynth.metrics.quality.evaluate import evaluate_quality

    device = resolve_device(device)
    if quality.features in CHECKPOINT_FEATURES:
        checkpoint = classifier_dir / outputs.CLASSIFY_MODEL
        extractor = feature_extractor(f"classifier:{checkpoint}", device=device)
        # Named relative to this unit's folder, so two copies of a run write the same quality.csv.
        extractor.description = extractor.description.replace(str(checkpoint), os.path.relpath(checkpoint, folder))
        extractor.description = extractor.description.replace("classifier", CHECKPOINT_FEATURES[quality.features], 1)
    else:
        extractor = feature_extractor(quality.features, inception_weights=quality.inception_weights, device=device)
    reader_real = concat([real, held_out], real.root) if held_out is not None else real
    report = evaluate_quality(synthetic_set(synthetic, run_folder), real, extractor, metrics, reader_real=reader_real)
    write_csv_atomic(report.table.assign(features=report.features, features_sha1=report.features_sha1),
                     folder / outputs.QUALITY_TABLE)
    write_csv_atomic(report.memorization, folder / outputs.QUALITY_MEMORIZATION)
    write_csv_atomic(report.most_copied, folder / outputs.QUALITY_MOST_COPIED)
    write_csv_atomic(report.reader, folder / outputs.QUALITY_READER)
