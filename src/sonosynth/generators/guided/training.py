"""Training the class-conditional denoiser and the noisy classifier together, resumable and DDP-ready.

Every random draw of a step (batch, timesteps, noise, label dropout, dropout layers) comes from
generators seeded by (seed, step, rank), so a resumed run repeats exactly what an uninterrupted one
would have done; the global RNG state is still checkpointed for anything outside that.

With `latent.enabled` (latent diffusion), latent.py first trains the autoencoder (its own
`latent.steps`, before and outside a wall-time budget: the budget probe times diffusion steps only)
and the loop below trains on the scaled latents instead of the pixels; the frozen autoencoder is
saved with the networks (`autoencoder.*` in model.safetensors, its scale in generator.json's details).
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sonosynth.atomic import write_text_atomic
from sonosynth.checkpoint import capture_rng_state, restore_rng_state
from sonosynth.data.manifest import Manifest
from sonosynth.device import autocast, resolve_precision
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import (
    CheckpointClock,
    CheckpointRecord,
    FitStart,
    commit_checkpoint,
    load_training_state,
    start_fit,
)
from sonosynth.generators.budget import measure_step_rate
from sonosynth.generators.guided.config import GuidedConfig
from sonosynth.generators.guided.data import (
    TrainingTensors,
    held_out_split,
    load_training_tensors,
    resolve_classes,
)
from sonosynth.generators.guided.distributed import ProcessGroup, join_process_group
from sonosynth.generators.guided.latent import LatentStage, latent_tensors, prepare_stage
from sonosynth.generators.guided.networks import build_classifier, build_denoiser, null_label
from sonosynth.generators.guided.schedules import (
    alphas_cumprod,
    ddpm_scheduler,
    min_snr_weight,
    training_target,
)
from sonosynth.progress import task as progress_task

log = logging.getLogger(__name__)

LOG_NAME = "train_log.csv"
EVAL_NAME = "classifier_eval.csv"
TRAINING_MANIFEST_DIR = "training"  # a copy of the training manifest, the parents of every sample


@dataclass
class Models:
    denoiser: nn.Module
    ema: AveragedModel
    optimizer: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LambdaLR
    classifier: nn.Module | None
    classifier_optimizer: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    step: int = 0
    log: list[dict] = field(default_factory=list)
    latent: LatentStage | None = None  # latent diffusion: the frozen autoencoder (saved, never optimized here)


def _warmup(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def build_models(config: GuidedConfig, num_classes: int, device: torch.device) -> Models:
    denoiser = to_layout(build_denoiser(config, num_classes).to(device), config)
    ema = AveragedModel(denoiser, multi_avg_fn=get_ema_multi_avg_fn(config.train.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup(config.train.warmup_steps))
    classifier = classifier_optimizer = None
    if config.classifier.enabled:
        classifier = to_layout(build_classifier(config, num_classes).to(device), config)
        classifier_optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.classifier.lr,
                                                 weight_decay=config.classifier.weight_decay)
    use_scaler = run_precision(config, device) == "fp16"
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    return Models(denoiser, ema, optimizer, lr_schedule, classifier, classifier_optimizer, scaler)


def _training_state(models: Models, held_out: np.ndarray) -> dict:
    return {
        "denoiser": models.denoiser.state_dict(), "ema": models.ema.state_dict(),
        "optimizer": models.optimizer.state_dict(), "lr_schedule": models.lr_schedule.state_dict(),
        "classifier": models.classifier.state_dict() if models.classifier else None,
        "classifier_optimizer": models.classifier_optimizer.state_dict() if models.classifier_optimizer else None,
        "grad_scaler": models.scaler.state_dict(), "rng": capture_rng_state(), "log": list(models.log),
        "held_out": held_out.tolist(),
    }


def sampling_weights(models: Models) -> dict[str, torch.Tensor]:
    """model.safetensors: the EMA denoiser (sampling's default), the raw denoiser, the noisy classifier and
    (latent diffusion) the autoencoder."""
    weights = {f"ema.{k.removeprefix('module.')}": v for k, v in models.ema.state_dict().items()
               if k.startswith("module.")}
    weights.update({f"denoiser.{k}": v for k, v in models.denoiser.state_dict().items()})
    if models.classifier is not None:
        weights.update({f"classifier.{k}": v for k, v in models.classifier.state_dict().items()})
    if models.latent is not None:
        weights.update(models.latent.weights())
    return weights


def _restore(models: Models, payload: dict) -> None:
    models.denoiser.load_state_dict(payload["denoiser"])
    models.ema.load_state_dict(payload["ema"])
    models.optimizer.load_state_dict(payload["optimizer"])
    models.lr_schedule.load_state_dict(payload["lr_schedule"])
    if models.classifier is not None:
        models.classifier.load_state_dict(payload["classifier"])
        models.classifier_optimizer.load_state_dict(payload["classifier_optimizer"])
    models.scaler.load_state_dict(payload["grad_scaler"])
    models.step = int(payload["step"])
    models.log = list(payload["log"])
    restore_rng_state(payload["rng"])


def _step_generator(seed: int, step: int, rank: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 64 + rank) * 8 + stream)


def denoiser_loss(denoiser: nn.Module, data: TrainingTensors, config: GuidedConfig, scheduler,
                  step: int, rank: int, device: torch.device) -> torch.Tensor:
    """MSE to the epsilon or v target (schedule.prediction) on a random batch at random timesteps, labels
    dropped with p=label_dropout; per-timestep min-SNR-γ weights when train.min_snr_gamma is set."""
    gen = _step_generator(config.seed, step, rank, 0)
    batch = config.train.batch_size
    index = torch.randint(0, len(data.labels), (batch,), generator=gen)
    x0 = data.images[index]
    if config.train.hflip:
        flip = torch.rand(batch, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], data.mirrored(index), x0)
    labels = data.labels[index]
    drop = torch.rand(batch, generator=gen) < config.train.label_dropout
    labels = torch.where(drop, torch.full_like(labels, null_label(len(data.classes))), labels)
    t = torch.randint(0, config.schedule.num_train_timesteps, (batch,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x0, labels, t, noise = x0.to(device), labels.to(device), t.to(device), noise.to(device)
    x_t = _layout(scheduler.add_noise(x0, noise, t), config)
    with autocast(device, run_precision(config, device)):
        predicted = denoiser(x_t, t, class_labels=labels)
    abar = alphas_cumprod(config.schedule)
    target = training_target(x0, noise, t, abar, config.schedule.prediction).float()
    if config.train.min_snr_gamma is None:
        return F.mse_loss(predicted.float(), target)
    per_image = (predicted.float() - target).pow(2).mean(dim=tuple(range(1, target.ndim)))
    return (min_snr_weight(t, abar, config.train.min_snr_gamma, config.schedule.prediction) * per_image).mean()


def classifier_loss(classifier: nn.Module, data: TrainingTensors, train_index: torch.Tensor, config: GuidedConfig,
                    scheduler, step: int, rank: int, device: torch.device) -> torch.Tensor:
    """Cross-entropy of the classifier on x_t at uniformly random t, so its gradient is useful mid-trajectory."""
    gen = _step_generator(config.seed, step, rank, 1)
    batch = config.classifier.batch_size
    index = train_index[torch.randint(0, len(train_index), (batch,), generator=gen)]
    x0, labels = data.images[index], data.labels[index]
    if config.train.hflip:
        flip = torch.rand(batch, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], data.mirrored(index), x0)
    t = torch.randint(0, config.schedule.num_train_timesteps, (batch,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    x_t = _layout(scheduler.add_noise(x0.to(device), noise.to(device), t.to(device)), config)
    with autocast(device, run_precision(config, device)):
        logits = classifier(x_t, t.to(device))
    return F.cross_entropy(logits.float(), labels.to(device))


def run_precision(config: GuidedConfig, device: torch.device) -> str:
    """The autocast precision of training and sampling; fp16 (a GPU setting) runs as fp32 on the CPU."""
    precision = resolve_precision(config.precision, device)
    return "fp32" if device.type != "cuda" and precision == "fp16" else precision


def to_layout(module: nn.Module, config: GuidedConfig) -> nn.Module:
    """The network in the config's memory layout (channels-last or torch's default)."""
    return module.to(memory_format=torch.channels_last) if config.channels_last else module


def _layout(x: torch.Tensor, config: GuidedConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


@torch.no_grad()
def classifier_accuracy_by_t(classifier: nn.Module, data: TrainingTensors, index: np.ndarray, config: GuidedConfig,
                             scheduler, device: torch.device, batch_size: int = 64) -> pd.DataFrame:
    """Held-out accuracy of the noisy classifier in `t_buckets` equal ranges of t (fixed noise, comparable runs)."""
    rows = []
    if len(index) == 0:
        return pd.DataFrame(rows, columns=["t_from", "t_to", "images", "accuracy"])
    was_training = classifier.training
    classifier.eval()
    total = config.schedule.num_train_timesteps
    edges = np.linspace(0, total, config.classifier.t_buckets + 1).round().astype(int)
    gen = torch.Generator().manual_seed(12345)
    for lo, hi in itertools.pairwise(edges):
        correct = 0
        for start in range(0, len(index), batch_size):
            chunk = torch.as_tensor(index[start:start + batch_size])
            x0, labels = data.images[chunk], data.labels[chunk]
            t = torch.randint(int(lo), int(hi), (len(chunk),), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            x_t = scheduler.add_noise(x0.to(device), noise.to(device), t.to(device))
            correct += int((classifier(x_t, t.to(device)).argmax(1).cpu() == labels).sum())
        rows.append({"t_from": int(lo), "t_to": int(hi) - 1, "images": len(index), "accuracy": correct / len(index)})
    classifier.train(was_training)
    return pd.DataFrame(rows)


def _write_outputs(out: Path, models: Models, start: FitStart, classes: list[str], held_out: np.ndarray,
                   accuracy: pd.DataFrame | None) -> None:
    """Checkpoint (the shared layout), log and evaluation, each atomic; a full disk keeps the previous ones."""
    config: GuidedConfig = start.config
    record = CheckpointRecord(kind="guided", config=config.model_dump(mode="json"), budget=start.budget,
                              training_images=start.images, step=models.step,
                              complete=models.step >= config.train.steps, details=record_details(models, classes))
    try:
        write_text_atomic(out / LOG_NAME, pd.DataFrame(models.log).to_csv(index=False))
        if accuracy is not None:
            write_text_atomic(out / EVAL_NAME, accuracy.assign(step=models.step).to_csv(index=False))
        commit_checkpoint(out, record, sampling_weights(models), _training_state(models, held_out))
    except OSError as exc:
        raise SonosynthError(f"{out}: could not write the checkpoint ({exc}); the previous checkpoint is intact. "
                             "Free disk space and re-run the same command to resume.") from exc


def record_details(models: Models, classes: list[str]) -> dict:
    """generator.json's details: the classes and, for latent diffusion, the latents' scale factor and the
    sampler's bound on x0 (latent.py)."""
    details: dict = {"classes": classes}
    if models.latent is not None:
        details["latent_scale"] = models.latent.scale
        details["latent_clip"] = models.latent.clip
    return details


@dataclass
class _Prepared:
    """The diffusion stage's training tensors (pixels or scaled latents), built once per fit."""

    data: TrainingTensors
    latent: LatentStage | None


def _prepare_data(training: Manifest, out: Path, config: GuidedConfig, classes: list[str], group: ProcessGroup,
                  resuming: bool, progress: bool) -> _Prepared:
    pixels = load_training_tensors(training, classes, config.image_size, config.in_channels)
    if not config.latent.enabled:
        return _Prepared(pixels, None)
    stage = prepare_stage(out, pixels.images, config, group.device, resuming=resuming, is_main=group.is_main,
                          barrier=group.barrier, progress=progress and group.is_main)
    return _Prepared(latent_tensors(stage, pixels, config, group.device), stage)


def _prepare_out(out: Path, training: Manifest, classes: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    training.with_labels(classes).rebased(out / TRAINING_MANIFEST_DIR).write()


def fit(training: Manifest, out: str | Path, config: GuidedConfig, *, device: str = "auto", resume: bool = True,
        progress: bool = True, on_step: Callable[[int], None] | None = None) -> Path:
    """Train (or continue training) into `out`; returns the checkpoint folder. Under torchrun, every rank calls this."""
    out = Path(out)
    group = join_process_group(device)
    try:
        classes = resolve_classes(training, config.classes)
        if group.distributed and config.budget is not None:
            raise SonosynthError("a training budget is measured on one process; under torchrun give train.steps.")
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        prepared: list[_Prepared] = []  # built on first use: by the budget probe, or by the fit itself

        def data_for(data_config: GuidedConfig, resuming: bool) -> _Prepared:
            if not prepared:
                prepared.append(_prepare_data(training, out, data_config, classes, group, resuming, progress))
            return prepared[0]

        def probe(probe_config: GuidedConfig) -> float:
            probe_config = probe_config.model_copy(update={"budget": None, "checkpoint_interval": "1000h"})
            probe_config = probe_config.with_training_schedule(probe_config.training_schedule().model_copy(
                update={"steps": 10**9, "checkpoint_every": 10**9}))
            with tempfile.TemporaryDirectory(prefix="sonosynth-probe-") as scratch:
                start = FitStart(probe_config, None, None, [])
                # A latent fit's autoencoder is trained (into `out`) before the probe's clock starts.
                data = data_for(probe_config, False)
                return measure_step_rate(lambda tick: _fit(training, Path(scratch), start, classes, group, False,
                                                           lambda _: tick(), data))

        start = start_fit("guided", ("guided",), training, out, config, resume, probe=probe)
        if start.record is not None and start.record.details.get("classes") != classes:
            raise SonosynthError(f"{out}: was trained on classes {start.record.details.get('classes')}, the manifest "
                                 f"now gives {classes}.")
        return _fit(training, out, start, classes, group, progress, on_step,
                    data_for(start.config, start.record is not None))
    finally:
        group.close()


def _fit(training: Manifest, out: Path, start: FitStart, classes: list[str], group: ProcessGroup, progress: bool,
         on_step: Callable[[int], None] | None, prepared: _Prepared) -> Path:
    config: GuidedConfig = start.config
    device = group.device
    data = prepared.data
    train_index, held_out = held_out_split(data, config.classifier.held_out_fraction, config.seed)
    train_index_t = torch.as_tensor(train_index)
    payload = load_training_state(out, start.record) if start.record is not None else None
    group.barrier()  # every rank has read the old checkpoint before rank 0 may replace it
    if group.is_main:
        _prepare_out(out, training, classes)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    models = build_models(config, len(classes), device)
    models.latent = prepared.latent
    if payload is not None:
        _restore(models, payload)
    denoiser, classifier = models.denoiser, models.classifier
    if group.distributed:
        denoiser = DistributedDataParallel(models.denoiser)
        classifier = DistributedDataParallel(models.classifier) if models.classifier is not None else None
    scheduler = ddpm_scheduler(config.schedule)
    last_saved = models.step if payload is not None else None
    # The wall-time rule would let ranks disagree on when to checkpoint (a barrier), so DDP uses steps only.
    clock = CheckpointClock(config.train.checkpoint_every,
                            float("inf") if group.distributed else config.checkpoint_seconds)

    steps = range(models.step, config.train.steps)
    bar = progress_task("guided diffusion", config.train.steps, completed=models.step, unit="step", tag="guided",
                        enabled=progress and group.is_main)
    try:
        for step in steps:
            torch.manual_seed(config.seed * 7919 + step * 31 + group.rank)  # dropout layers, per step
            loss = denoiser_loss(denoiser, data, config, scheduler, step, group.rank, device)
            c_loss = (classifier_loss(classifier, data, train_index_t, config, scheduler, step, group.rank, device)
                      if classifier is not None else torch.zeros((), device=device))
            if not group.all_true(math.isfinite(loss.item()) and math.isfinite(c_loss.item())):
                kept = (f"the last good checkpoint (step {last_saved}) is kept in {out}"
                        if last_saved is not None else "no checkpoint had been written yet")
                raise SonosynthError(f"training diverged at step {step + 1}: loss {loss.item():.4g}, classifier "
                                     f"loss {c_loss.item():.4g}; {kept}. Lower train.lr or use fp32, then resume.")
            _optimize(models, loss, c_loss, config)
            models.step = step + 1
            models.log.append({"step": models.step, "loss": loss.item(), "classifier_loss": c_loss.item(),
                               "lr": models.optimizer.param_groups[0]["lr"]})
            bar.update(models.step, **{k: v for k, v in models.log[-1].items() if k != "step"})
            if clock.due(models.step, config.train.steps):
                _checkpoint(out, models, start, classes, data, held_out, scheduler, group)
                last_saved = models.step
            if on_step is not None:
                on_step(models.step)
    finally:
        bar.close()
    if payload is not None and models.step == int(payload["step"]) and group.is_main:
        log.info("%s: already trained for %d steps; nothing to do.", out, models.step)
    group.barrier()
    return out


def _optimize(models: Models, loss: torch.Tensor, c_loss: torch.Tensor, config: GuidedConfig) -> None:
    pairs = [(models.optimizer, models.denoiser)]
    if models.classifier is not None:
        pairs.append((models.classifier_optimizer, models.classifier))
    for optimizer, _ in pairs:
        optimizer.zero_grad(set_to_none=True)
    # The two losses have disjoint graphs, so one backward of their sum gives each network its own gradient.
    models.scaler.scale(loss + c_loss).backward()
    for optimizer, module in pairs:
        models.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(module.parameters(), config.train.grad_clip)
        models.scaler.step(optimizer)
    models.scaler.update()
    models.lr_schedule.step()
    models.ema.update_parameters(models.denoiser)


def _checkpoint(out: Path, models: Models, start: FitStart, classes: list[str], data: TrainingTensors,
                held_out: np.ndarray, scheduler, group: ProcessGroup) -> None:
    config: GuidedConfig = start.config
    if group.is_main:
        accuracy = None
        if models.classifier is not None and len(held_out):
            accuracy = classifier_accuracy_by_t(models.classifier, data, held_out, config, scheduler, group.device)
        _write_outputs(out, models, start, classes, held_out, accuracy)
        recent = models.log[-config.train.log_every:]
        message = (f"step {models.step}: loss {np.mean([r['loss'] for r in recent]):.4f}, "
                   f"classifier loss {np.mean([r['classifier_loss'] for r in recent]):.4f}")
        if accuracy is not None:
            message += "; held-out accuracy by t: " + ", ".join(
                f"{r.t_from}-{r.t_to}: {r.accuracy:.2f}" for r in accuracy.itertuples())
        log.info(message)
    group.barrier()
