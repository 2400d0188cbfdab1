"""Fitting SinDDM/FewDDM: the training loop, atomic checkpoints, exact resume, the loss log.

The loop follows the official trainer: each step draws one scale uniformly (and, for FewDDM, one of
the k images uniformly: the study's rule), a batch of copies of that scale's image, each copy with
its own t ~ U{0..T-1} and noise; L1 loss between the true and predicted noise (or v, an option); Adam; the learning
rate multiplied by lr_decay at the milestones; every ema_every steps the EMA is reset to the model
before ema_start and updated with ema_decay after.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.nn import functional as F

from sonosynth.atomic import atomic_path
from sonosynth.checkpoint import capture_rng_state, restore_rng_state
from sonosynth.device import autocast, resolve_precision
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import (
    CheckpointClock,
    CheckpointRecord,
    FitStart,
    commit_checkpoint,
    load_training_state,
)
from sonosynth.generators.sinddm.config import SinDDMConfig
from sonosynth.generators.sinddm.data import TrainingData
from sonosynth.generators.sinddm.diffusion import DiffusionTables, clean_target, forward_process, velocity
from sonosynth.generators.sinddm.network import SinDDMDenoiser
from sonosynth.progress import task as progress_task

LOSS_LOG_NAME = "loss.csv"


def memory_format(config: SinDDMConfig) -> torch.memory_format:
    return torch.channels_last if config.channels_last else torch.contiguous_format


@dataclass
class TrainingState:
    """Everything that evolves during training (what a checkpoint restores)."""

    model: SinDDMDenoiser
    ema: SinDDMDenoiser
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    step: int = 0


def new_state(config: SinDDMConfig, device: torch.device, images: int = 1) -> TrainingState:
    """A fresh model, EMA and optimizer; `images` sizes the per-image embedding when the config asks for one."""
    embedded = images if config.image_embedding else 0
    model = SinDDMDenoiser(config.channels, config.dim, embedded,
                           compiled_depthwise_grad=config.compiled_depthwise_grad,
                           blurry_input=config.blurry_input).to(
        device=device, memory_format=memory_format(config))
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.lr_milestones, gamma=config.lr_decay)
    return TrainingState(model, ema, optimizer, scheduler)


@torch.no_grad()
def update_ema(state: TrainingState, config: SinDDMConfig) -> None:
    """Official rule, applied after the optimizer step of step `state.step` when step % ema_every == 0."""
    if state.step % config.ema_every:
        return
    if state.step < config.ema_start:
        state.ema.load_state_dict(state.model.state_dict())
        return
    for ema_param, param in zip(state.ema.parameters(), state.model.parameters(), strict=True):
        ema_param.lerp_(param, 1.0 - config.ema_decay)


RECEPTIVE_RADIUS = 16  # the denoiser sees 33 x 33 px: an output pixel depends on inputs up to 16 px away


@dataclass(frozen=True)
class Batch:
    """One training step's images: B copies (or crops) of one scale of one training image."""

    scale: int
    image: int
    sharp: torch.Tensor
    blurry: torch.Tensor
    mask: torch.Tensor | None = None  # crops: 1 where the loss equals the full-image loss, else 0


def random_crops(sharp: torch.Tensor, blurry: torch.Tensor, batch: int, crop: int,
                 margin: int = RECEPTIVE_RADIUS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`batch` random windows of one (C, H, W) image pair, and where each window's loss is exact.

    A pixel closer than `margin` to a window edge that is not an image edge would see zero padding
    where the full image has content; masking it out makes every counted pixel's loss identical to
    its loss on the full image, so the crops do not teach the network false borders (SinDDM takes its
    global layout from the real borders).
    """
    _, height, width = sharp.shape
    ch, cw = min(crop, height), min(crop, width)
    tops = torch.randint(0, height - ch + 1, (batch,)).tolist()
    lefts = torch.randint(0, width - cw + 1, (batch,)).tolist()
    mask = torch.zeros(batch, 1, ch, cw, device=sharp.device)
    for b, (y, x) in enumerate(zip(tops, lefts, strict=True)):
        top, bottom = (0 if y == 0 else margin), (0 if y + ch == height else margin)
        left, right = (0 if x == 0 else margin), (0 if x + cw == width else margin)
        mask[b, :, top:ch - bottom, left:cw - right] = 1.0
    sharp_crops = torch.stack([sharp[:, y:y + ch, x:x + cw] for y, x in zip(tops, lefts, strict=True)])
    blurry_crops = torch.stack([blurry[:, y:y + ch, x:x + cw] for y, x in zip(tops, lefts, strict=True)])
    return sharp_crops, blurry_crops, mask


def scale_probabilities(data: TrainingData, config: SinDDMConfig) -> torch.Tensor:
    """Probability of drawing each scale in a step (see SinDDMConfig.scale_sampling)."""
    if config.scale_sampling == "uniform":
        return torch.full((data.n_scales,), 1.0 / data.n_scales)
    crop = config.crop_size
    pixels = torch.tensor([
        float(min(h, crop) * min(w, crop)) if crop is not None and max(h, w) > crop else float(h * w)
        for h, w in (tuple(s.shape[-2:]) for s in data.sharp)
    ])
    weights = 1.0 / pixels
    return weights / weights.sum()


def draw_batch(data: TrainingData, config: SinDDMConfig) -> Batch:
    """One scale (see scale_sampling), one image (FewDDM: uniformly among k), and a batch of copies or crops."""
    if config.scale_sampling == "uniform":
        # The official draw; kept as randint so a uniform run consumes the RNG exactly as before.
        scale = int(torch.randint(data.n_scales, (1,)).item())
    else:
        scale = int(torch.multinomial(scale_probabilities(data, config), 1).item())
    image = int(torch.randint(data.n_images, (1,)).item()) if data.n_images > 1 else 0
    return batch_at(data, config, scale, image)


def batch_at(data: TrainingData, config: SinDDMConfig, scale: int, image: int) -> Batch:
    """The batch for one chosen scale and image: crops where the scale exceeds crop_size, else copies."""
    sharp, blurry = data.sharp[scale][image], data.blurry[scale][image]
    crop = config.crop_size
    if crop is not None and max(sharp.shape[-2:]) > crop:
        return Batch(scale, image, *random_crops(sharp, blurry, config.batch_size, crop))
    return Batch(scale, image, sharp.expand(config.batch_size, *sharp.shape),
                 blurry.expand(config.batch_size, *blurry.shape))


def training_loss(model: SinDDMDenoiser, tables: DiffusionTables, batch: Batch, precision: str,
                  fmt: torch.memory_format, prediction: str = "epsilon") -> torch.Tensor:
    """L1 between the target (the noise, or v) and the network's prediction of it, one t and one noise per
    batch element (see SinDDMConfig.prediction)."""
    sharp = batch.sharp
    t = torch.randint(0, tables.timesteps, (sharp.shape[0],), device=sharp.device)
    noise = torch.randn(sharp.shape, device=sharp.device)
    noisy = forward_process(sharp, batch.blurry, t, batch.scale, tables, noise).contiguous(memory_format=fmt)
    target = noise
    if prediction == "v":
        target = velocity(clean_target(sharp, batch.blurry, t, batch.scale, tables), noise, tables.alpha_bar[t])
    with autocast(sharp.device, precision):
        blurry = batch.blurry.contiguous(memory_format=fmt) if model.blurry_input and batch.scale > 0 else None
        predicted = model(noisy, t, batch.scale, batch.image, blurry)
    if batch.mask is None:
        return F.l1_loss(predicted.float(), target)
    errors = (predicted.float() - target).abs() * batch.mask
    return errors.sum() / (batch.mask.sum() * sharp.shape[1])


def train_step(state: TrainingState, data: TrainingData, tables: DiffusionTables, config: SinDDMConfig,
               precision: str, batch: Batch | None = None) -> dict[str, Any]:
    """One optimizer step on `batch` (default: a drawn one, see draw_batch)."""
    batch = batch if batch is not None else draw_batch(data, config)
    scale, image = batch.scale, batch.image
    lr = state.optimizer.param_groups[0]["lr"]
    loss = training_loss(state.model, tables, batch, precision, memory_format(config), config.prediction)
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(value)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()
    update_ema(state, config)
    state.scheduler.step()
    state.step += 1
    return {"step": state.step, "scale": scale, "image": image, "loss": value, "lr": lr}


def measure_step_seconds(data: TrainingData, config: SinDDMConfig, device: torch.device, *, warmup: int = 2,
                         steps: int = 6) -> float:
    """Expected seconds of one training step: sum over scales of P(scale) x its measured step time.

    A step's cost depends on its scale (the finest costs several times the coarsest), and equal-time
    sampling draws the cheap scales most; timing a short run of drawn steps mixes the scales by chance,
    so each scale is timed alone here (after `warmup` steps, which compile and allocate) and weighted by
    the probability the real run draws it with."""
    device = torch.device(device)
    precision = resolve_precision(config.precision, device)
    data = data.to(device)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels, device)
    state = new_state(config, device, data.n_images)
    state.model.train()
    seconds = []
    for scale in range(data.n_scales):
        for _ in range(warmup):
            train_step(state, data, tables, config, precision, batch_at(data, config, scale, 0))
        started = time.perf_counter()
        for _ in range(steps):
            train_step(state, data, tables, config, precision, batch_at(data, config, scale, 0))
        seconds.append((time.perf_counter() - started) / steps)
    return float((scale_probabilities(data, config) * torch.tensor(seconds)).sum())


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_details(data: TrainingData, tables: DiffusionTables, label: str) -> dict[str, Any]:
    """What sampling needs besides the weights (generator.json `details`)."""
    return {"sizes": [list(size) for size in data.plan.sizes], "scale_step": data.plan.scale_step,
            "blur_levels": list(data.blur_levels), "start_steps": list(tables.starts),
            "fingerprint": data.fingerprint, "label": label}


def training_state(state: TrainingState) -> dict[str, Any]:
    return {"model": state.model.state_dict(), "ema": state.ema.state_dict(),
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "rng": capture_rng_state()}


def restore(state: TrainingState, saved: dict[str, Any]) -> None:
    state.model.load_state_dict(saved["model"])
    state.ema.load_state_dict(saved["ema"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step = int(saved["step"])
    restore_rng_state(saved["rng"])


def _write_loss_log(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=["step", "scale", "image", "loss", "lr"]).to_csv(tmp, index=False)


def _read_loss_log(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    return table[table["step"] <= up_to_step].to_dict("records")


# ------------------------------------------------------------------------------------------ fit
StepHook = Callable[[int], None]


def train(data: TrainingData, start: FitStart, out: Path, device: torch.device, *, kind: str, label: str,
          progress: bool = True, on_step: StepHook | None = None) -> Path:
    """Train (or continue the checkpoint `start` names) into the folder `out`; returns `out`.

    `start` comes from `generators.base.start_fit` (resume rules, budget schedule); `on_step(step)`
    is called after every step (the budget probe times it).
    """
    config: SinDDMConfig = start.config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOSS_LOG_NAME
    precision = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    data = data.to(device)
    tables = DiffusionTables.build(config.timesteps, data.blur_levels, device)
    state = new_state(config, device, data.n_images)
    details = checkpoint_details(data, tables, label)
    rows: list[dict[str, Any]] = []
    if start.record is not None:
        if start.record.details.get("fingerprint") != data.fingerprint:
            raise SonosynthError(f"{out} was trained on other pixels (another image size or pyramid); train into a "
                                 "new --out folder.")
        restore(state, load_training_state(out, start.record))
        rows = _read_loss_log(log_path, state.step)

    def save() -> None:
        record = CheckpointRecord(kind=kind, config=config.model_dump(mode="json"), budget=start.budget,
                                  training_images=start.images, step=state.step,
                                  complete=state.step >= config.train_steps, details=details)
        _write_loss_log(log_path, rows)
        commit_checkpoint(out, record, state.ema.state_dict(), training_state(state))

    if state.step >= config.train_steps:
        if start.record is None or not start.record.complete:
            save()
        return out
    description = f"SinDDM {'x'.join(map(str, data.plan.sizes[-1]))} px, {data.n_scales} scales" + (
        f", {data.n_images} images (FewDDM)" if data.n_images > 1 else "")
    started, first_step = time.perf_counter(), state.step
    clock = CheckpointClock(config.checkpoint_every, config.checkpoint_seconds)
    saved_step = start.step if start.record is not None else None
    state.model.train()
    with progress_task(description, config.train_steps, completed=state.step, unit="step", tag="sinddm",
                       enabled=progress) as bar:
        while state.step < config.train_steps:
            try:
                row = train_step(state, data, tables, config, precision)
            except FloatingPointError as exc:
                last = f"the last good checkpoint (step {saved_step}) is kept in {out}" \
                    if saved_step is not None else "no checkpoint was written yet"
                raise SonosynthError(f"training diverged: loss {exc} at step {state.step + 1}; {last}. Lower lr, "
                                     "use precision=fp32, or resume from that checkpoint.") from exc
            rows.append(row)
            if clock.due(state.step, config.train_steps):
                save()
                saved_step = state.step
            recent = rows[-50:]
            bar.update(state.step, loss=sum(r["loss"] for r in recent) / len(recent), lr=row["lr"],
                       steps_per_s=(state.step - first_step) / max(time.perf_counter() - started, 1e-9))
            if on_step is not None:
                on_step(state.step)
    return out


__all__ = ["LOSS_LOG_NAME", "RECEPTIVE_RADIUS", "Batch", "TrainingState", "batch_at", "draw_batch",
           "measure_step_seconds", "new_state",
           "random_crops", "train", "train_step", "training_loss", "update_ema"]
