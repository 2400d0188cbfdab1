"""Adapters from a cache unit (a folder) to the library stage it runs; no study logic lives here."""

from __future__ import annotations

from pathlib import Path

from sonosynth.data.manifest import Manifest
from sonosynth.data.split import FoldData
from sonosynth.experiment.spec import ClassifierSpec


def classify_unit(regime: str, classifier: ClassifierSpec, seed: int, train: Manifest, validation: Manifest,
                  synthetic: Manifest | None, out: Path, device: str = "auto", progress: bool = True) -> None:
    """Train one classifier under one regime and score it on the real validation fold, writing into `out`."""
    from sonosynth.classify.regimes import run_regime
    from sonosynth.classify.training import load_train_config

    config = load_train_config(classifier.preset, {**classifier.overrides, "seed": seed})
    run_regime(regime, classifier.model, FoldData(train, validation), out, config, synthetic=synthetic,
               pretrained=classifier.pretrained, weights=classifier.weights, device=device, progress=progress)
