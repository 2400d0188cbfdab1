"""Carrying out a regime on one fold: train its stages, score on the fold's real validation images."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonosynth.atomic import write_csv_atomic, write_text_atomic
from sonosynth.classify.regimes.leakage import check_synthetic_parents, drop_derived, stopping_split
from sonosynth.classify.regimes.plan import NEEDS_SYNTHETIC, only_origin, plan_regime
from sonosynth.data.manifest import Manifest
from sonosynth.data.split import FoldData
from sonosynth.errors import InputDataError, SonosynthError

STAGE_NAMES = ("train", "pretrain", "finetune")
RUN_FILES = ("metrics.json", "confusion.csv", "predictions.csv", "model.pt", "losses.csv", "run.json")

@dataclass(frozen=True)
class StageRecord:
    name: str
    images: int
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    initialised_from: str | None  # the checkpoint this stage started from (pretrained or previous stage)
    start_fingerprint: str  # hash of the weights at the start of the stage
    end_fingerprint: str


@dataclass(frozen=True)
class RegimeResult:
    out: Path
    regime: str
    classes: list[str]
    plan: pd.DataFrame  # TrainingPlan.summary(): images per stage, origin and label
    metrics: dict
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    losses: pd.DataFrame
    stages: list[StageRecord] = field(default_factory=list)
    stop_patients: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_regime(regime: str, model_name: str, fold: FoldData, out: str | os.PathLike, config,
               *, synthetic: Manifest | None = None, stop: Manifest | None = None, pretrained: str = "none",
               weights: str | os.PathLike | None = None, device: str = "auto", progress: bool = True,
               model_options: dict | None = None) -> RegimeResult:
    """Train `model_name` under `regime` on `fold.train` (+ `synthetic`), score it on `fold.validation`.

    Writes into `out`: metrics.json, confusion.csv, predictions.csv, model.pt (the trained classifier
    with its config, classes and training config), losses.csv (per stage and epoch) and run.json (what
    ran: regime, config, plan, stopping patients, stage records). An interrupted run continues from its
    last epoch, so `out` must hold only work on these same inputs: the caller's cache guarantees that
    (`sonosynth.experiment.cache`), and `clear_regime_outputs` empties a folder for other inputs.
    """
    from sonosynth.classify import (
        create_classifier,
        load_classifier,
        read_classifier_checkpoint,
        save_classifier,
    )
    from sonosynth.classify.augment import regular_augmentation
    from sonosynth.classify.data import ManifestDataset
    from sonosynth.classify.training import (
        predict_probabilities,
        seed_everything,
        state_fingerprint,
        train_classifier,
    )
    from sonosynth.device import resolve_device
    from sonosynth.metrics.classification import evaluate_manifest

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, evaluation = fold.train, fold.validation
    only_origin(train, "real", "real training")
    only_origin(evaluation, "real", "evaluation")
    if len(evaluation) == 0:
        raise InputDataError("the evaluation fold has no images; check --fold against the folds table.")
    if synthetic is not None and regime in NEEDS_SYNTHETIC:
        only_origin(synthetic, "synthetic", "synthetic")
        check_synthetic_parents(synthetic, evaluation)
    used_synthetic = synthetic if regime in NEEDS_SYNTHETIC else None

    fit_real, stop_set = stopping_split(train, evaluation, config.stop_fraction, config.seed, stop)
    if used_synthetic is not None:
        used_synthetic = drop_derived(used_synthetic, stop_set)
    plan = plan_regime(regime, fit_real, used_synthetic, augment_real=config.augment_real)

    classes = sorted(set(train.labels) | set(evaluation.labels) | set(used_synthetic.labels if used_synthetic else []))
    torch_device = resolve_device(device)
    augment = regular_augmentation(config.augmentation)
    stop_data = (ManifestDataset(stop_set, classes, config.image_size, config.in_channels)
                 if len(stop_set) else None)

    seed_everything(config.seed)
    model = create_classifier(model_name, len(classes), in_channels=config.in_channels, pretrained=str(pretrained),
                              weights=weights, image_size=config.image_size, **(model_options or {}))
    initialised_from = None if str(pretrained) == "none" else str(pretrained)
    records: list[StageRecord] = []
    losses_csv = out / "losses.csv"
    for index, stage in enumerate(plan.stages):
        if stage.init_from_previous:
            # Really reload: the fine-tuning stage starts from the file the previous stage wrote.
            previous = out / f"{plan.stages[index - 1].name}.pt"
            model, stored_classes = load_classifier(previous, torch_device)
            if stored_classes != classes:
                raise SonosynthError(f"{previous}: classes {stored_classes} differ from this run's {classes}.")
            initialised_from = str(previous)
        is_last = index == len(plan.stages) - 1
        stage_checkpoint = out / f"{stage.name}.pt"
        if not is_last and stage_checkpoint.is_file():
            # An earlier, interrupted run of these inputs finished this stage already.
            records.append(StageRecord(**read_classifier_checkpoint(stage_checkpoint)["record"]))
            continue
        fit_data = ManifestDataset(stage.images, classes, config.image_size, config.in_channels,
                                   augment=augment if stage.augment_origins else None,
                                   augment_rows=stage.augment_rows())
        start_fingerprint = state_fingerprint(model)
        result = train_classifier(model, fit_data, stop_data, config, torch_device, stage=stage.name,
                                  losses_csv=losses_csv, state_path=out / f".{stage.name}-state.pt",
                                  progress=progress)
        record = StageRecord(stage.name, len(stage.images), result.best_epoch, len(result.history),
                             result.stopped_early, initialised_from, start_fingerprint, state_fingerprint(model))
        records.append(record)
        if not is_last:
            save_classifier(stage_checkpoint, model, classes,
                            extra={"regime": regime, "stage": stage.name, "train_config": config.model_dump(),
                                   "record": record.__dict__})

    evaluation_data = ManifestDataset(evaluation, classes, config.image_size, config.in_channels)
    probabilities = predict_probabilities(model, evaluation_data, torch_device, batch_size=max(config.batch_size, 64))
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    report = evaluate_manifest(evaluation, predicted, classes)
    predictions = _predictions_table(evaluation, predicted, probabilities, classes)
    metrics = {**report.to_dict(), "regime": regime, "model": model_name, "images": len(evaluation),
               "patients": int(evaluation.table["patient_id"].nunique()),
               "train_accuracy": kept_epoch_train_accuracy(out / "losses.csv", plan.stages[-1].name,
                                                           records[-1].best_epoch)}

    save_classifier(out / "model.pt", model, classes,
                    extra={"regime": regime, "train_config": config.model_dump(), "stages": [r.__dict__ for r in records]})
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_csv_atomic(report.confusion, out / "confusion.csv", index=True)
    write_csv_atomic(predictions, out / "predictions.csv")
    seconds = time.perf_counter() - started
    run = {
        "regime": regime, "model": model_name, "model_options": model_options or {},
        "config": config.model_dump(mode="json"), "pretrained": str(pretrained), "classes": classes, "seconds": seconds, "plan": plan.summary().to_dict(orient="records"),
        "stop_patients": sorted(set(stop_set.table["patient_id"])), "stop_images": len(stop_set),
        "stages": [r.__dict__ for r in records],
    }
    write_text_atomic(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    losses = pd.read_csv(losses_csv) if losses_csv.is_file() else pd.DataFrame()
    return RegimeResult(out, regime, classes, plan.summary(), metrics, report.confusion, report.per_class, predictions,
                        losses, records, run["stop_patients"], seconds)


def kept_epoch_train_accuracy(losses_csv: Path, stage: str, epoch: int) -> float | None:
    """The training accuracy (on the batches as trained, augmented where the regime augments) of the epoch
    whose weights were kept, in the last stage: what the fetal study reports beside test accuracy."""
    if not losses_csv.is_file():
        return None
    losses = pd.read_csv(losses_csv)
    row = losses[(losses["stage"] == stage) & (losses["epoch"] == epoch)]
    return float(row["train_accuracy"].iloc[0]) if len(row) else None


def _predictions_table(evaluation: Manifest, predicted: list[str], probabilities: np.ndarray,
                       classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({
        "path": evaluation.table["path"].astype(str).to_numpy(),  # relative to the manifest's folder
        "patient_id": evaluation.table["patient_id"].astype(str).to_numpy(),
        "label": evaluation.labels,
        "predicted": predicted,
    })
    table["correct"] = table["label"] == table["predicted"]
    for i, label in enumerate(classes):
        table[f"p_{label}"] = probabilities[:, i]
    return table


def read_regime_result(out: str | os.PathLike) -> RegimeResult:
    """The result of a finished run in `out`, read back from the files `run_regime` wrote."""
    out = Path(out)
    run = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    per_class = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
    per_class.index.name = "class"
    losses = pd.read_csv(out / "losses.csv") if (out / "losses.csv").is_file() else pd.DataFrame()
    return RegimeResult(out, run["regime"], run["classes"], pd.DataFrame(run["plan"]), metrics,
                        pd.read_csv(out / "confusion.csv", index_col=0), per_class, pd.read_csv(out / "predictions.csv"),
                        losses, [StageRecord(**record) for record in run["stages"]], run["stop_patients"],
                        run["seconds"])


def clear_regime_outputs(out: str | os.PathLike) -> None:
    """Remove what `run_regime` writes into `out` (outputs and resumable stage state), nothing else."""
    out = Path(out)
    stage_files = [out / f"{prefix}{name}{suffix}" for name in STAGE_NAMES
                   for prefix, suffix in ((".", "-state.pt"), ("", ".pt"))]
    for stale in [*stage_files, *(out / name for name in RUN_FILES)]:
        if stale.is_file():
            stale.unlink()
