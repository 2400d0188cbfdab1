"""The classifier training loop: Adam, early stopping on a patient-level stopping set, best-epoch restore.

Early stopping needs images the model does not fit on, and they must never be the evaluation fold,
or the fold's score would have chosen its own epoch. `carve_stopping_set` therefore holds out whole
patients from the REAL TRAINING side of the fold (stratified by class, seeded); a caller may pass
its own stopping manifest instead. Synthetic images never enter a stopping set.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sonosynth.atomic import write_csv_atomic
from sonosynth.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from sonosynth.config import StrictModel, load_config
from sonosynth.data.manifest import Manifest
from sonosynth.data.split import patient_labels
from sonosynth.device import Precision, autocast, resolve_precision
from sonosynth.progress import task as progress_task

LOSS_COLUMNS = ("stage", "epoch", "train_loss", "train_accuracy", "stop_loss", "best", "seconds")


class ClassifierTrainConfig(StrictModel):
    """How a classifier is trained; presets in sonosynth/presets/classifier.yaml (smoke, cpu, paper)."""

    image_size: int = Field(64, ge=16, le=1024, description="side of the square network input, pixels")
    in_channels: Literal[1, 3] = Field(1, description="1: grayscale (normal); 3: grayscale repeated to RGB")
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(20, ge=1, description="upper bound; early stopping usually ends sooner")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=1, description="epochs without a lower stopping loss before training stops")
    min_delta: float = Field(0.0, ge=0, description="a stopping loss must drop by more than this to count")
    warmup_epochs: int = Field(
        0, ge=0,
        description="epochs before early stopping watches the stopping loss (Keras' start_from_epoch): while "
                    "BatchNorm statistics settle, a near-uniform first epoch can otherwise win on tiny data",
    )
    stop_fraction: float = Field(
        0.2, ge=0, lt=1,
        description="share of training patients per class held out for early stopping (0: no early stopping, "
                    "train all epochs and keep the last)",
    )
    early_stopping: bool = Field(
        True, description="stop after `patience` epochs without improvement; false: run every epoch and keep the "
                          "epoch with the lowest loss on the stopping set (the held-out training patients)")
    class_weighting: bool = Field(False, description="weight the loss by inverse class frequency of the fit set")
    augmentation: Literal["lung", "fetal"] = Field("lung", description="regular augmentation preset")
    augment_real: bool = Field(
        False, description="augment the real training images in every regime and stage that trains on them (the "
                           "fetal study); false: only the `+regular` regimes augment (the lung study's comparison)")
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="DataLoader workers; 0 keeps the decoded-image cache warm")
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32", description="training arithmetic. fp32: the exact baseline. bf16: autocast to bfloat16 with "
        "channels-last weights for the training steps and the stopping loss (weights, optimizer and the "
        "reported test predictions stay fp32); a speed switch for CPUs with AMX and for GPUs, which changes "
        "the numbers slightly. auto: bf16 where the hardware has native bf16, else fp32")

    def unit_fields(self) -> dict:
        """The settings that identify a training run (a study's cache key): fp32, the default, is left out,
        so runs cached before the precision switch existed stay valid."""
        return self.model_dump(mode="json", exclude={"precision"} if self.precision == "fp32" else None)


def load_train_config(preset: str | os.PathLike = "cpu", overrides: dict | None = None) -> ClassifierTrainConfig:
    return load_config(ClassifierTrainConfig, "classifier", preset, overrides)


# ----------------------------------------------------------------------------- stopping set
def carve_stopping_set(train: Manifest, fraction: float, seed: int) -> tuple[Manifest, Manifest]:
    """Split the real training side into (fit, stop) by whole patients, per class, reproducibly.

    A class with n training patients gives round(fraction * n) of them to the stopping set, at
    least one when n >= 3 and never its last one, so no class vanishes from fitting. Patients are
    ranked by a seeded draw in sorted-ID order, so the same fold and seed always hold out the same
    patients, whatever regime runs; regimes are then compared on identical model selection.
    Synthetic rows are never held out (they stay in `fit`; see regimes.drop_derived for their leakage rule).
    """
    real = train.where(train.table["origin"] == "real")
    if fraction <= 0 or len(real) == 0:
        return train, real.where([False] * len(real))
    labels = patient_labels(real)  # one class per patient (its majority), sorted by patient ID
    rng = np.random.default_rng(seed)
    draw = pd.Series(rng.random(len(labels)), index=labels.index)
    held_out: list[str] = []
    for label in sorted(labels.unique()):
        patients = draw[labels == label].sort_values()
        n = len(patients)
        count = min(n - 1, max(1 if n >= 3 else 0, round(fraction * n)))
        held_out.extend(patients.index[:count])
    is_stop = train.table["patient_id"].isin(held_out) & (train.table["origin"] == "real")
    return train.where(~is_stop), train.where(is_stop)


# ----------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def state_fingerprint(model: nn.Module) -> str:
    """A short hash of every tensor in the state dict: equal weights give equal fingerprints."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def class_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """n / (K * n_c), the 'balanced' weighting; classes absent from fitting get weight 1 (they never occur)."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(float)
    weights = np.ones(num_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def _loader(dataset: Dataset, config: ClassifierTrainConfig, shuffle: bool, generator: torch.Generator | None) -> DataLoader:
    # Dropping a last batch of one keeps BatchNorm layers in heads (pocovidnet) from failing on it.
    drop_last = shuffle and len(dataset) % config.batch_size == 1 and len(dataset) > config.batch_size
    return DataLoader(dataset, batch_size=config.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=config.num_workers, drop_last=drop_last)


@torch.no_grad()
def predict_probabilities(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Softmax outputs (N, K) in dataset order, with the model in eval mode."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    outputs = [torch.softmax(model(images.to(device)).float(), dim=1).cpu() for images, _ in loader]
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, 0))


def _memory_format(precision: Precision) -> torch.memory_format:
    # Channels-last is what makes bf16 convolutions fast on the CPU (oneDNN); fp32 keeps the baseline layout.
    return torch.contiguous_format if precision == "fp32" else torch.channels_last


def _to_device(images: torch.Tensor, device: torch.device, precision: Precision) -> torch.Tensor:
    images = images.to(device)
    return images.contiguous(memory_format=_memory_format(precision)) if images.dim() == 4 else images


@torch.no_grad()
def _mean_loss(model: nn.Module, dataset: Dataset, device: torch.device, weight: torch.Tensor | None,
               batch_size: int, precision: Precision = "fp32") -> float:
    """Mean (class-weighted when training is) cross-entropy over a whole dataset."""
    model.eval()
    total, norm = 0.0, 0.0
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        targets = targets.to(device)
        with autocast(device, precision):
            logits = model(_to_device(images, device, precision)).float()
        losses = nn.functional.cross_entropy(logits, targets, reduction="none")
        w = weight[targets] if weight is not None else torch.ones_like(losses)
        total += float((losses * w).sum())
        norm += float(w.sum())
    return total / max(norm, 1e-12)


# ----------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class TrainResult:
    history: pd.DataFrame  # one row per epoch: LOSS_COLUMNS
    best_epoch: int  # the epoch whose weights the model now holds
    stopped_early: bool
    resumed_from_epoch: int  # 0 unless an interrupted run was continued


def train_classifier(model: nn.Module, fit: Dataset, stop: Dataset | None, config: ClassifierTrainConfig,
                     device: torch.device, *, stage: str = "train", losses_csv: Path | None = None,
                     state_path: Path | None = None, progress: bool = True) -> TrainResult:
    """Fit `model` in place and leave it holding the weights of the epoch with the lowest stopping loss.

    Without a stopping set every epoch runs and the last weights are kept. After each epoch the
    loss history is rewritten to `losses_csv` (rows of other stages in it are kept) and, with
    `state_path`, everything needed to continue is saved there, so an interrupted run resumes at
    the next epoch with the same result; the state file is removed when training ends.
    """
    precision = resolve_precision(config.precision, device)
    model.to(device=device, memory_format=_memory_format(precision))
    targets = getattr(fit, "targets", None)
    weight = None
    if config.class_weighting:
        if targets is None:
            raise TypeError("class weighting needs a dataset with a `targets` attribute")
        weight = class_weights(targets, model.num_classes).to(device)
    criterion = nn.CrossEntropyLoss(weight=weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    seed_everything(config.seed)

    history: list[dict] = []
    best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
    start_epoch = 1
    if state_path is not None and state_path.is_file():
        saved = load_checkpoint(state_path, map_location=device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["loader_generator"])
        restore_rng_state(saved["rng"])
        history, best_loss, best_epoch, waited = saved["history"], saved["best_loss"], saved["best_epoch"], saved["waited"]
        best_state = saved["best_state"]
        start_epoch = len(history) + 1
    resumed_from = start_epoch - 1
    previous_rows = _other_stage_rows(losses_csv, stage)

    loader = _loader(fit, config, shuffle=True, generator=generator)
    # Progress counts batches over all epochs (early stopping may end it sooner); losses go to TensorBoard.
    batches = len(loader)
    with progress_task(f"classifier {stage}", config.epochs * batches, completed=(start_epoch - 1) * batches,
                       unit="batch", tag=f"classifier/{stage}", enabled=progress) as bar:
        for epoch in range(start_epoch, config.epochs + 1):
            if config.early_stopping and waited >= config.patience:
                break
            started = time.perf_counter()
            bar.update(description=f"classifier {stage} epoch {epoch}/{config.epochs}")
            train_loss, train_accuracy = _train_epoch(model, loader, criterion, optimizer, device, bar.advance,
                                                      precision)
            stop_loss = (_mean_loss(model, stop, device, weight, config.batch_size, precision) if stop is not None
                         else float("nan"))
            watching = epoch > config.warmup_epochs or epoch == config.epochs
            improved = stop is None or (watching and stop_loss < best_loss - config.min_delta)
            if improved:
                best_loss, best_epoch, waited = stop_loss, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            elif watching:
                waited += 1
            history.append({"stage": stage, "epoch": epoch, "train_loss": train_loss,
                            "train_accuracy": train_accuracy, "stop_loss": stop_loss,
                            "best": improved, "seconds": time.perf_counter() - started})
            bar.update(epoch * batches, train_loss=train_loss, stop_loss=stop_loss, train_accuracy=train_accuracy,
                       lr=optimizer.param_groups[0]["lr"])
            if losses_csv is not None:
                _write_losses(losses_csv, previous_rows, history)
            if state_path is not None:
                save_checkpoint(state_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "loader_generator": generator.get_state(), "rng": capture_rng_state(), "history": history,
                    "best_loss": best_loss, "best_epoch": best_epoch, "waited": waited, "best_state": best_state,
                })

    model.to(memory_format=torch.contiguous_format)
    if best_state is not None:
        model.load_state_dict(best_state)
    if state_path is not None and state_path.is_file():
        state_path.unlink()
    frame = pd.DataFrame(history, columns=list(LOSS_COLUMNS))
    return TrainResult(history=frame, best_epoch=best_epoch, stopped_early=len(history) < config.epochs,
                       resumed_from_epoch=resumed_from)


def _train_epoch(model: nn.Module, loader: DataLoader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device, advance: Callable[[], None], precision: Precision = "fp32") -> tuple[float, float]:
    """One pass over `loader`: the mean loss and the accuracy on the (augmented) training batches as seen."""
    model.train()
    total, correct, count = 0.0, 0, 0
    for images, targets in loader:
        images, targets = _to_device(images, device, precision), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(images).float()
        loss = criterion(logits, targets)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(targets)
        correct += int((logits.detach().argmax(dim=1) == targets).sum())
        count += len(targets)
        advance()
    return total / max(count, 1), correct / max(count, 1)


def _other_stage_rows(losses_csv: Path | None, stage: str) -> pd.DataFrame:
    if losses_csv is None or not losses_csv.is_file():
        return pd.DataFrame(columns=list(LOSS_COLUMNS))
    rows = pd.read_csv(losses_csv)
    return rows[rows["stage"] != stage]


def _write_losses(path: Path, previous: pd.DataFrame, history: list[dict]) -> None:
    current = pd.DataFrame(history, columns=list(LOSS_COLUMNS))
    frames = [f for f in (previous, current) if len(f)]
    table = pd.concat(frames, ignore_index=True) if frames else current
    write_csv_atomic(table, path)
