"""Fitting SinGAN: one pyramid of patch-GANs per training image, trained coarse to fine.

Each scale is trained with WGAN-GP plus a reconstruction loss (alpha * MSE between the generator's
output from the fixed reconstruction input and the real image), then frozen. The noise std of a
scale is `noise_amp` times the RMSE between the real image and the upsampled reconstruction from
the scales below. A scale starts from the previous scale's weights when their widths match.

Deviations from the reference code, on purpose:
- the coarsest reconstruction noise is drawn once and kept (as the paper says; the reference code
  re-draws it every iteration, tamarott/SinGAN issues #43, #63);
- every generator step recomputes the fake with the current weights (the reference reused a graph
  from before the first update, which newer PyTorch rejects);
- resizing uses PyTorch's antialiased bicubic instead of a MATLAB-style resizer.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from sonosynth.atomic import atomic_path
from sonosynth.data.manifest import Manifest
from sonosynth.device import resolve_device
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import (
    CheckpointClock,
    CheckpointRecord,
    FitStart,
    commit_checkpoint,
    load_checkpoint_weights,
    load_training_images,
    load_training_state,
    start_fit,
)
from sonosynth.generators.singan.cascade import (
    Scale,
    draw_noise,
    random_input,
    reconstruction_input,
    run_scale,
)
from sonosynth.generators.singan.checkpoints import (
    ModelEntry,
    losses_path,
    model_entries,
    scale_from_payload,
    scale_payload,
    scale_tensors,
)
from sonosynth.generators.singan.config import SinGANConfig
from sonosynth.generators.singan.networks import (
    PatchDiscriminator,
    ScaleGenerator,
    border,
    build,
    frozen,
    gradient_penalty,
    no_param_grads,
)
from sonosynth.generators.singan.pyramid import PyramidPlan, plan_pyramid, real_pyramid
from sonosynth.progress import task as progress_task

LOSS_COLUMNS = ["scale", "iteration", "loss_d", "loss_g", "loss_rec", "d_real", "d_fake", "gradient_penalty",
                "lr_g", "lr_d", "noise_amp", "seconds"]

# Called after every iteration with (scale, iteration); tests use it to simulate a crash.
IterationHook = Callable[[int, int], None]


# ------------------------------------------------------------------------------ input images
def image_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 to (1, C, H, W) float in [-1, 1]."""
    data = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy
    data = data[None, None] if data.ndim == 2 else data.permute(2, 0, 1)[None]
    return data / 127.5 - 1.0


def training_tensors(training: Manifest, channels: int) -> list[tuple[Path, str, torch.Tensor]]:
    arrays = load_training_images(training, channels)
    return [(path, label, image_tensor(array))
            for path, label, array in zip(training.absolute_paths(), training.labels, arrays, strict=True)]


def model_names(paths: list[Path]) -> list[str]:
    """A folder name per training image: its file stem, made unique and filesystem-safe."""
    names, seen = [], set()
    for path in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem) or "image"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base}-{k}"
        seen.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------ fit
class FitCheckpoint:
    """The fit's checkpoint folder: every commit writes the shared layout (generators/base.py)."""

    def __init__(self, out: Path, start: FitStart, config: SinGANConfig, entries: list[ModelEntry],
                 weights: dict[str, torch.Tensor]) -> None:
        self.out, self.start, self.config, self.entries, self.weights = out, start, config, entries, weights
        self.weights_step = start.record.weights_step if start.record is not None else None

    def step(self, partial_iterations: int = 0) -> int:
        return sum(len(e.scales) for e in self.entries) * self.config.iterations + partial_iterations

    def commit(self, entry: ModelEntry, *, finished: dict[str, Any] | None = None, last: dict[str, Any] | None = None,
               partial: dict[str, Any] | None = None) -> None:
        """A finished scale (its payload) or a partial one; `last` is the entry's last finished scale."""
        if finished is not None:
            entry.scales.append({"noise_amp": finished["noise_amp"], "widths": list(finished["widths"]),
                                 "shape": list(finished["shape"])})
            self.weights.update(scale_tensors(entry.name, len(entry.scales) - 1, finished))
            last = finished
        step = self.step(partial["iteration"] if partial is not None else 0)
        record = CheckpointRecord(kind="singan", config=self.config.model_dump(mode="json"), budget=self.start.budget,
                                  training_images=self.start.images, step=step,
                                  complete=all(e.complete for e in self.entries), weights_step=self.weights_step,
                                  details={"models": [e.details() for e in self.entries]})
        state = {"model": entry.name,
                 "last": None if last is None else {"critic": last["critic"], "rng": last["rng"]},
                 "partial": partial}
        commit_checkpoint(self.out, record, self.weights if finished is not None else None, state)
        if finished is not None:
            self.weights_step = step


def fit(training: Manifest, out: Path, config: SinGANConfig, *, device: str = "auto", resume: bool = True,
        progress: bool = True, on_iteration: IterationHook | None = None) -> Path:
    """Train one SinGAN per training image into `out` (see checkpoints.py for the layout); returns `out`."""
    out = Path(out)
    torch_device = resolve_device(device)
    images = training_tensors(training, config.channels)
    names = model_names([path for path, _, _ in images])
    plans = [plan_pyramid(t.shape[-2], t.shape[-1], config.scale_factor, config.min_size, config.max_size)
             for _, _, t in images]
    start = start_fit("singan", ("singan",), training, out, config, resume,
                      probe=lambda c: probe_rate(images[0][2], plans[0], c, torch_device) / len(images))
    config = start.config
    entries = [ModelEntry(name, path, label, [list(s) for s in plan.shapes], plan.scale_factor)
               for name, (path, label, _), plan in zip(names, images, plans, strict=True)]
    weights: dict[str, torch.Tensor] = {}
    state: dict[str, Any] | None = None
    if start.record is not None:
        saved = model_entries(start.record, out)
        if [(e.name, e.shapes) for e in saved] != [(e.name, e.shapes) for e in entries]:
            raise SonosynthError(f"{out} holds a SinGAN fit with other pyramids; train into a new --out folder.")
        entries = saved
        if start.record.weights_step is not None:
            weights = load_checkpoint_weights(out, start.record)
        if not start.record.complete:
            state = load_training_state(out, start.record)
    checkpoint = FitCheckpoint(out, start, config, entries, weights)
    for i, (entry, (_, _, tensor), plan) in enumerate(zip(entries, images, plans, strict=True)):
        if entry.complete:
            continue
        resumed = state if state is not None and state["model"] == entry.name else None
        fit_image(tensor, plan, entry, config, torch_device, checkpoint, resumed, progress=progress,
                  on_iteration=on_iteration, tag=f"[{i + 1}/{len(entries)}] {entry.name}")
    return out


def probe_rate(image: torch.Tensor, plan: PyramidPlan, config: SinGANConfig, device: torch.device) -> float:
    """Iterations-at-every-scale per second of one image: 3 iterations per scale, the first not counted."""
    marks: dict[int, list[float]] = {}
    probe_config = config.model_copy(update={"budget": None, "iterations": 3, "checkpoint_every": 10**9,
                                             "checkpoint_interval": "1000h"})
    with tempfile.TemporaryDirectory(prefix="sonosynth-probe-") as scratch:
        entry = ModelEntry("probe", Path(scratch) / "probe.png", "probe", [list(s) for s in plan.shapes],
                           plan.scale_factor)
        fit_image(image, plan, entry, probe_config, device, None, None, progress=False,
                  on_iteration=lambda scale, _: marks.setdefault(scale, []).append(time.perf_counter()))
    seconds = sum((t[-1] - t[0]) / (len(t) - 1) for t in marks.values())
    return 1.0 / max(seconds, 1e-9)


def fit_image(image: torch.Tensor, plan: PyramidPlan, entry: ModelEntry, config: SinGANConfig,
              device: torch.device, checkpoint: FitCheckpoint | None, state: dict[str, Any] | None, *,
              progress: bool = True, on_iteration: IterationHook | None = None, tag: str = "") -> list[Scale]:
    """Train (or finish training) one image's pyramid; returns its frozen scales.

    `checkpoint` receives every commit (None: a probe that saves nothing); `state` is the training state
    saved for this image, if it was the one in training.
    """
    reals = [r.to(device) for r in real_pyramid(image, plan)]
    rng = torch.Generator().manual_seed(config.seed)
    scales: list[Scale] = []
    previous: dict | None = None  # the last finished scale's payload (weights to start the next scale from)
    if entry.scales:
        assert checkpoint is not None and state is not None and state["last"] is not None
        for k in range(len(entry.scales)):
            scales.append(scale_from_payload(scale_payload(entry.name, k, entry, checkpoint.weights), config, device))
        previous = {**scale_payload(entry.name, len(entry.scales) - 1, entry, checkpoint.weights), **state["last"]}
        rng.set_state(previous["rng"])
    partial = state["partial"] if state is not None else None
    for n in range(len(scales), plan.num_scales):
        trainer = ScaleTrainer(n, reals, scales, plan, entry, config, device, rng, previous)
        previous = trainer.train(progress=progress, on_iteration=on_iteration, tag=tag, partial=partial,
                                 checkpoint=checkpoint, losses=None if checkpoint is None else
                                 losses_path(checkpoint.out, entry.name))
        partial = None
        scales.append(scale_from_payload(previous, config, device))
    return scales


class ScaleTrainer:
    """Trains scale `n` given the frozen scales below it; resumable from its partial checkpoint."""

    def __init__(self, n: int, reals: list[torch.Tensor], scales: list[Scale], plan: PyramidPlan,
                 entry: ModelEntry, config: SinGANConfig, device: torch.device, rng: torch.Generator,
                 previous: dict | None) -> None:
        self.n, self.reals, self.scales, self.plan = n, reals, scales, plan
        self.entry, self.config, self.device, self.rng = entry, config, device, rng
        self.real = reals[n]
        self.shape = plan.shapes[n]
        self.border = border(config.num_layers, config.kernel_size)
        self.widths = config.widths(n)
        c = config.channels
        self.generator = build(ScaleGenerator, c, *self.widths, config.num_layers, config.kernel_size, rng).to(device)
        self.critic = build(PatchDiscriminator, c, *self.widths, config.num_layers, config.kernel_size, rng).to(device)
        if previous is not None and tuple(previous["widths"]) == self.widths:
            self.generator.load_state_dict(previous["generator"])
            self.critic.load_state_dict(previous["critic"])
        if n == 0:
            # The coarsest scale is purely generative: unit noise, nothing below it.
            self.z_rec = draw_noise(self.shape, c, True, rng, device=device)
            self.rec_previous = torch.zeros_like(self.real)
            self.noise_amp = 1.0
        else:
            self.z_rec = torch.zeros_like(self.real)
            self.rec_previous = reconstruction_input(scales, self.shape, plan.scale_factor, self.border)
            rmse = torch.sqrt(F.mse_loss(self.real, self.rec_previous)).item()
            self.noise_amp = config.noise_amp * rmse
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr_d, betas=betas)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, [config.lr_drop_at], config.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.MultiStepLR(self.opt_d, [config.lr_drop_at], config.lr_gamma)
        self.previous = previous
        self.start = 0
        self.rows: list[dict] = []
        self.losses: Path | None = None

    # ----------------------------------------------------------------- one iteration
    def _previous_sample(self) -> torch.Tensor:
        if self.n == 0:
            return torch.zeros_like(self.real)
        return random_input(self.scales, self.plan.shapes[: self.n], self.shape, self.config.channels,
                            self.plan.scale_factor, self.border, self.rng, self.device)

    def step(self) -> dict:
        cfg, G, D = self.config, self.generator, self.critic
        noise = draw_noise(self.shape, cfg.channels, self.n == 0, self.rng, device=self.device)
        for j in range(cfg.d_steps):
            self.opt_d.zero_grad(set_to_none=True)
            d_real = D(self.real).mean()
            (-d_real).backward()
            previous = self._previous_sample()  # a fresh random sample of the scales below, every step
            last = j == cfg.d_steps - 1
            with torch.set_grad_enabled(last):  # only the last fake is reused by the generator steps
                fake = run_scale(G, self.noise_amp, noise, previous, self.border)
            d_fake = D(fake.detach()).mean()
            d_fake.backward()
            penalty = gradient_penalty(D, self.real, fake.detach(), cfg.gp_weight, self.rng)
            penalty.backward()
            self.opt_d.step()
        with no_param_grads(D):
            for j in range(cfg.g_steps):
                self.opt_g.zero_grad(set_to_none=True)
                if j:
                    fake = run_scale(G, self.noise_amp, noise, previous, self.border)
                adversarial = -D(fake).mean()
                if cfg.rec_weight > 0:
                    rebuilt = run_scale(G, self.noise_amp, self.z_rec, self.rec_previous, self.border)
                    rec = cfg.rec_weight * F.mse_loss(rebuilt, self.real)
                else:
                    rec = torch.zeros((), device=self.device)
                (adversarial + rec).backward()
                self.opt_g.step()
        row = {"loss_d": (d_fake - d_real + penalty).item(), "loss_g": adversarial.item() + rec.item(),
               "loss_rec": rec.item(), "d_real": d_real.item(), "d_fake": d_fake.item(),
               "gradient_penalty": penalty.item(), "lr_g": self.opt_g.param_groups[0]["lr"],
               "lr_d": self.opt_d.param_groups[0]["lr"], "noise_amp": self.noise_amp}
        self.sched_g.step()
        self.sched_d.step()
        return row

    # ----------------------------------------------------------------- loop, checkpoints
    def train(self, *, progress: bool, on_iteration: IterationHook | None, tag: str, partial: dict | None,
              checkpoint: FitCheckpoint | None, losses: Path | None) -> dict:
        cfg = self.config
        self.losses = losses
        if partial is not None:
            self._restore(partial)
        self.generator.train()
        self.critic.train()
        h, w = self.shape
        clock = CheckpointClock(cfg.checkpoint_every, cfg.checkpoint_seconds)
        description = f"{tag} scale {self.n + 1}/{self.plan.num_scales} ({h}x{w})".strip()
        bar = progress_task(description, cfg.iterations, completed=self.start, unit="iteration",
                            tag=f"singan/scale{self.n}", enabled=progress)
        for it in range(self.start, cfg.iterations):
            began = time.perf_counter()
            row = self.step()
            bar.update(it + 1, **{k: v for k, v in row.items() if isinstance(v, (int, float))})
            self.rows.append({"scale": self.n, "iteration": it, **row, "seconds": time.perf_counter() - began})
            done = it + 1
            if checkpoint is not None and clock.due(done, cfg.iterations) and done < cfg.iterations:
                self._write_losses()
                checkpoint.commit(self.entry, last=self.previous, partial=self._partial(done))
            if on_iteration is not None:
                on_iteration(self.n, it)
        bar.close()
        payload = self._final()
        if checkpoint is not None:
            self._write_losses()
            checkpoint.commit(self.entry, finished=payload)
        frozen(self.generator)
        return payload

    def _partial(self, iteration: int) -> dict:
        return {"scale": self.n, "iteration": iteration, "noise_amp": self.noise_amp, "z_rec": self.z_rec,
                "generator": self.generator.state_dict(), "critic": self.critic.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "rng": self.rng.get_state(), "rows": self.rows}

    def _restore(self, state: dict) -> None:
        if int(state["scale"]) != self.n:
            raise SonosynthError(f"{self.entry.name}: the saved partial scale is scale {state['scale']}, not "
                                 f"{self.n}; train into a new --out folder.")
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.rng.set_state(state["rng"])
        self.noise_amp = float(state["noise_amp"])
        self.z_rec = state["z_rec"].to(self.device)
        self.start = int(state["iteration"])
        self.rows = list(state["rows"])

    def _final(self) -> dict:
        return {
            "generator": {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()},
            "critic": {k: v.detach().cpu().clone() for k, v in self.critic.state_dict().items()},
            "widths": list(self.widths), "noise_amp": self.noise_amp, "z_rec": self.z_rec.cpu(),
            "shape": list(self.shape), "rng": self.rng.get_state(),
        }

    def _write_losses(self) -> None:
        path = self.losses
        if path is None:
            return
        earlier = pd.DataFrame(columns=LOSS_COLUMNS)
        if path.is_file():
            earlier = pd.read_csv(path)
            earlier = earlier[earlier["scale"] < self.n]
        current = pd.DataFrame(self.rows, columns=LOSS_COLUMNS)
        parts = [part for part in (earlier, current) if len(part)]
        table = pd.concat(parts, ignore_index=True) if parts else current
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)


def reconstruction_rmse(scales: list[Scale], real: torch.Tensor, scale_factor: float, border_px: int) -> float:
    """RMSE between the finest scale's reconstruction and the real image at that scale (a fit diagnostic)."""
    below = scales[:-1]
    target = scales[-1].shape
    previous = (reconstruction_input(below, target, scale_factor, border_px) if below
                else torch.zeros_like(real))
    with torch.no_grad():
        rebuilt = run_scale(scales[-1], scales[-1].noise_amp, scales[-1].z_rec, previous, border_px)
    return math.sqrt(F.mse_loss(rebuilt, real).item())
