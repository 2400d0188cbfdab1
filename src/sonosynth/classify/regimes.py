"""Training regimes: which images a classifier trains on, with which augmentation, in which stages.

`plan_regime` is a pure function from (regime, real training Manifest, optional SyntheticSet) to a
TrainingPlan; `run_regime` carries a plan out on one fold and scores it on the fold's real validation
images.

| regime | stages |
| --- | --- |
| `real` | real training images, no augmentation |
| `real+regular` | real training images, regular augmentation |
| `real+synthetic` | real + synthetic images (the lung study's top-up of the minority class), no augmentation |
| `real+synthetic+regular` | real + synthetic images, regular augmentation on all of them |
| `synthetic-only` | synthetic images only |
| `pretrain-synthetic->finetune-real` | stage 1 on synthetic images; stage 2 reloads the stage-1 checkpoint from disk and fine-tunes on the real images with the same optimizer settings (the fetal study) |
| `mixed` | one shuffled pool of synthetic and real images: the fetal study's "Mixed Data" arm. It trains on the same images as `real+synthetic`; the name is kept so each study's table can be reproduced under its own label |

Leakage rules enforced here: evaluation is on real validation images only; a synthetic image made
from an evaluation-fold image is an error; the early-stopping set is held-out real TRAINING patients
(or a caller's manifest disjoint from the evaluation fold), and synthetic images made from those
patients' images are left out of fitting, so the stopping loss is never measured on parents of
training images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonosynth.atomic import atomic_path, write_text_atomic
from sonosynth.data.manifest import Manifest, concat
from sonosynth.data.split import FoldData
from sonosynth.errors import InputDataError, SonosynthError
from sonosynth.hashing import file_sha1

REGIMES: tuple[str, ...] = (
    "real",
    "real+regular",
    "real+synthetic",
    "real+synthetic+regular",
    "synthetic-only",
    "pretrain-synthetic->finetune-real",
    "mixed",
)
NEEDS_SYNTHETIC = frozenset(r for r in REGIMES if "synthetic" in r or r == "mixed")
ALL_ORIGINS = frozenset({"real", "synthetic"})

STAGE_NAMES = ("train", "pretrain", "finetune")
RUN_FILES = ("metrics.json", "confusion.csv", "predictions.csv", "model.pt", "losses.csv", "run.json")


@dataclass(frozen=True)
class Stage:
    """One training run: its images and which origins among them get the regular augmentation."""

    name: str  # "train", or "pretrain" / "finetune"
    images: Manifest
    augment_origins: frozenset[str] = frozenset()
    init_from_previous: bool = False  # start from the checkpoint the previous stage saved

    def augment_rows(self) -> list[bool]:
        return self.images.table["origin"].isin(sorted(self.augment_origins)).tolist()

    def summary(self) -> pd.DataFrame:
        counts = self.images.table.groupby(["origin", "label"]).size().rename("images").reset_index()
        counts.insert(0, "stage", self.name)
        counts["augmented"] = counts["origin"].isin(sorted(self.augment_origins))
        return counts


@dataclass(frozen=True)
class TrainingPlan:
    regime: str
    stages: tuple[Stage, ...]

    def summary(self) -> pd.DataFrame:
        return pd.concat([stage.summary() for stage in self.stages], ignore_index=True)


def _only(manifest: Manifest, origin: str, role: str) -> Manifest:
    wrong = manifest.table["origin"] != origin
    if wrong.any():
        raise InputDataError(
            f"{manifest.root}: the {role} manifest has {int(wrong.sum())} row(s) whose origin is not {origin!r}; "
            f"pass real images as the dataset and generated ones with --synthetic."
        )
    return manifest


def plan_regime(regime: str, real: Manifest, synthetic: Manifest | None = None) -> TrainingPlan:
    """The stages of `regime` over the real training images and (for the synthetic regimes) a SyntheticSet."""
    if regime not in REGIMES:
        raise SonosynthError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}.")
    _only(real, "real", "real training")
    if regime in NEEDS_SYNTHETIC:
        if synthetic is None or len(synthetic) == 0:
            raise SonosynthError(f"regime {regime!r} needs synthetic images; pass a SyntheticSet with --synthetic.")
        _only(synthetic, "synthetic", "synthetic")
    if regime in ("real", "real+regular"):
        augment = ALL_ORIGINS if regime == "real+regular" else frozenset()
        return TrainingPlan(regime, (Stage("train", real, augment),))
    if regime == "synthetic-only":
        return TrainingPlan(regime, (Stage("train", synthetic),))
    if regime == "pretrain-synthetic->finetune-real":
        return TrainingPlan(regime, (Stage("pretrain", synthetic), Stage("finetune", real, init_from_previous=True)))
    pool = concat([real, synthetic], root=real.root)
    augment = ALL_ORIGINS if regime == "real+synthetic+regular" else frozenset()
    return TrainingPlan(regime, (Stage("train", pool, augment),))


def _weights_identity(source: str | os.PathLike) -> str:
    """A weights source for the resume key: a file by its contents (a retrained checkpoint at the same path
    must not reuse results), anything else (none, imagenet) by name."""
    if str(source) in ("none", "imagenet") or not Path(source).is_file():
        return str(source)
    return f"{source}#sha1={file_sha1(source)}"


# ----------------------------------------------------------------------------- leakage guards
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
    _only(stop, "real", "early-stopping")
    shared = sorted(set(stop.table["patient_id"]) & set(evaluation.table["patient_id"]))
    if shared:
        raise InputDataError(
            f"{stop.root}: the early-stopping manifest shares patient(s) {shared[:5]} with the evaluation fold; "
            "early stopping must not see evaluation patients."
        )
    overlap = set(stop.table["patient_id"]) & set(train.table["patient_id"])
    return train.where(~train.table["patient_id"].isin(overlap)), stop


# ----------------------------------------------------------------------------- running a regime
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
    plan: TrainingPlan
    metrics: dict
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    predictions: pd.DataFrame
    losses: pd.DataFrame
    stages: list[StageRecord] = field(default_factory=list)
    stop_patients: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reused: bool = False


def _manifest_digest(manifest: Manifest | None) -> str | None:
    if manifest is None:
        return None
    rows = sorted(zip(map(str, manifest.absolute_paths()), manifest.labels, strict=True))
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def run_regime(regime: str, model_name: str, fold: FoldData, out: str | os.PathLike, config,
               *, synthetic: Manifest | None = None, stop: Manifest | None = None, pretrained: str = "none",
               weights: str | os.PathLike | None = None, device: str = "auto", progress: bool = True,
               model_options: dict | None = None) -> RegimeResult:
    """Train `model_name` under `regime` on `fold.train` (+ `synthetic`), score it on `fold.validation`.

    Writes into `out`: metrics.json, confusion.csv, predictions.csv, model.pt (the trained classifier
    with its config, classes and training config), losses.csv (per stage and epoch) and run.json (what
    ran: regime, config, plan, stopping patients, stage records). A finished run with the same inputs
    is reused; an interrupted one continues from its last epoch.
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
    _only(train, "real", "real training")
    _only(evaluation, "real", "evaluation")
    if len(evaluation) == 0:
        raise InputDataError("the evaluation fold has no images; check --fold against the folds table.")
    if synthetic is not None and regime in NEEDS_SYNTHETIC:
        _only(synthetic, "synthetic", "synthetic")
        check_synthetic_parents(synthetic, evaluation)
    used_synthetic = synthetic if regime in NEEDS_SYNTHETIC else None

    key = {
        "regime": regime, "model": model_name, "model_options": model_options or {}, "config": config.model_dump(),
        "pretrained": _weights_identity(pretrained), "weights": None if weights is None else _weights_identity(weights),
        "train": _manifest_digest(train), "evaluation": _manifest_digest(evaluation),
        "synthetic": _manifest_digest(used_synthetic), "stop": _manifest_digest(stop),
    }
    fit_real, stop_set = stopping_split(train, evaluation, config.stop_fraction, config.seed, stop)
    if used_synthetic is not None:
        used_synthetic = drop_derived(used_synthetic, stop_set)
    plan = plan_regime(regime, fit_real, used_synthetic)
    reused = _load_finished(out, key, plan)
    if reused is not None:
        return reused
    _forget_other_runs(out, key)

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
               "patients": int(evaluation.table["patient_id"].nunique())}

    save_classifier(out / "model.pt", model, classes,
                    extra={"regime": regime, "train_config": config.model_dump(), "stages": [r.__dict__ for r in records]})
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    _write_csv(out / "confusion.csv", report.confusion, index=True)
    _write_csv(out / "predictions.csv", predictions, index=False)
    seconds = time.perf_counter() - started
    run = {
        "key": key, "classes": classes, "seconds": seconds, "plan": plan.summary().to_dict(orient="records"),
        "stop_patients": sorted(set(stop_set.table["patient_id"])), "stop_images": len(stop_set),
        "stages": [r.__dict__ for r in records],
    }
    write_text_atomic(out / "run.json", json.dumps(run, indent=2, default=str) + "\n")
    losses = pd.read_csv(losses_csv) if losses_csv.is_file() else pd.DataFrame()
    return RegimeResult(out, regime, classes, plan, metrics, report.confusion, report.per_class, predictions, losses,
                        records, run["stop_patients"], seconds)


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


def _write_csv(path: Path, frame: pd.DataFrame, index: bool) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)


def _load_finished(out: Path, key: dict, plan: TrainingPlan) -> RegimeResult | None:
    """The stored result when `out` holds a finished run of exactly these inputs, else None."""
    if not all((out / name).is_file() for name in RUN_FILES):
        return None
    try:
        run = json.loads((out / "run.json").read_text())
    except json.JSONDecodeError:
        return None
    if run.get("key") != _jsonable(key):
        return None
    metrics = json.loads((out / "metrics.json").read_text())
    confusion = pd.read_csv(out / "confusion.csv", index_col=0)
    per_class = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
    per_class.index.name = "class"
    stages = [StageRecord(**record) for record in run["stages"]]
    return RegimeResult(out, key["regime"], run["classes"], plan, metrics, confusion, per_class,
                        pd.read_csv(out / "predictions.csv"), pd.read_csv(out / "losses.csv"), stages,
                        run["stop_patients"], run["seconds"], reused=True)


def _jsonable(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


def _forget_other_runs(out: Path, key: dict) -> None:
    """Start clean when `out` holds (part of) a run with other inputs; keep partial work of this one."""
    key_file = out / ".run-key.json"
    if key_file.is_file() and json.loads(key_file.read_text()) == _jsonable(key):
        return
    stage_files = [out / f"{prefix}{name}{suffix}" for name in STAGE_NAMES
                   for prefix, suffix in ((".", "-state.pt"), ("", ".pt"))]
    for stale in [*stage_files, *(out / name for name in RUN_FILES)]:
        if stale.is_file():
            stale.unlink()
    write_text_atomic(key_file, json.dumps(_jsonable(key)) + "\n")
