"""Sampling loop with classifier guidance, classifier-free guidance or none; DDPM, DDIM or DPM-Solver++;
seeded per image.

Classifier guidance follows Dhariwal & Nichol: with DDPM the reverse-step mean moves by
scale * variance * grad_x log p(y | x_t, t); with DDIM and DPM-Solver++ the predicted noise moves by
-sqrt(1 - abar_t) * scale * grad_x log p(y | x_t, t) (guidance on the score; with v-prediction the
network's v is converted to eps and x0 first). Classifier-free guidance mixes the conditional and
"no label" outputs: out_u + w * (out_c - out_u).

Latent diffusion (config.latent): the loop runs on scaled latents z, with the classifier's gradient
taken in latent space (it was trained on noisy latents), x0 clipped to the training latents' range
[-clip, clip] instead of [-1, 1] (latent.py says why), and the result decoded once at the end,
D(z / scale) clamped to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from sonosynth.config import format_validation_error
from sonosynth.data.manifest import MANIFEST_FILENAME, Manifest
from sonosynth.device import autocast
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import (
    CheckpointRecord,
    PretrainedGenerator,
    SampleGroup,
    round_robin,
    to_uint8,
    write_synthetic_set,
)
from sonosynth.generators.guided.config import GuidedConfig, GuidedSampleSettings, SampleConfig
from sonosynth.generators.guided.latent import WEIGHT_PREFIX, build_autoencoder, decode, encode_mean
from sonosynth.generators.guided.networks import build_classifier, build_denoiser, null_label
from sonosynth.generators.guided.schedules import (
    alphas_cumprod,
    ddim_timesteps,
    ddim_update,
    ddpm_update,
    dpm_solver_scheduler,
    guided_x0,
)
from sonosynth.generators.guided.training import TRAINING_MANIFEST_DIR, run_precision, to_layout

SEED_STRIDE = 1_000_000  # seeds of class k start at base + k * SEED_STRIDE, so classes never share noise
GENERATOR_NAME = "guided"


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class GuidedModel(PretrainedGenerator):
    """A trained checkpoint ready to sample: networks in eval mode plus what they were trained with.

    `n` images of the asked label per call (with no label, `n` dealt round-robin over the classes);
    class k's image i has seed `seed + k * SEED_STRIDE + i`.
    """

    kind = "guided"
    config_type = GuidedConfig
    settings_type = GuidedSampleSettings
    config: GuidedConfig

    def __init__(self, folder: Path, record: CheckpointRecord, config: GuidedConfig, tensors: dict[str, torch.Tensor],
                 device: torch.device, use_ema: bool = True) -> None:
        super().__init__(folder, record, config)
        self.classes: list[str] = list(record.details["classes"])
        self.device = device
        self.tensors = tensors
        self.abar = alphas_cumprod(config.schedule)
        self.precision = run_precision(config, device)
        self.classifier: nn.Module | None = None
        if any(k.startswith("classifier.") for k in tensors):
            classifier = build_classifier(config, len(self.classes))
            classifier.load_state_dict(_prefixed(tensors, "classifier."))
            self.classifier = to_layout(classifier.to(device).eval(), config)
        self.autoencoder: nn.Module | None = None
        self.latent_scale: float | None = None
        self.latent_clip: float | None = None
        if config.latent.enabled:
            autoencoder = build_autoencoder(config)
            autoencoder.load_state_dict(_prefixed(tensors, WEIGHT_PREFIX))
            self.autoencoder = autoencoder.to(device).eval()
            self.latent_scale = float(record.details["latent_scale"])
            self.latent_clip = float(record.details["latent_clip"])
        self.use_ema: bool | None = None
        self.denoiser: nn.Module
        self.select(use_ema)

    @property
    def path(self) -> Path:
        return self.folder

    def select(self, use_ema: bool) -> GuidedModel:
        """Load the EMA (default) or the raw denoiser weights."""
        if use_ema != self.use_ema:
            denoiser = build_denoiser(self.config, len(self.classes))
            denoiser.load_state_dict(_prefixed(self.tensors, "ema." if use_ema else "denoiser."))
            self.denoiser, self.use_ema = to_layout(denoiser.to(self.device).eval(), self.config), use_ema
        return self

    @classmethod
    def _from_weights(cls, folder: Path, record: CheckpointRecord, config: GuidedConfig,
                      tensors: dict[str, torch.Tensor], device: torch.device) -> GuidedModel:
        return cls(folder, record, config, tensors, device)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.tensors

    def save_pretrained(self, folder: str | Path) -> Path:
        """Also the training manifest (the parents of every sample), rebased into the new folder."""
        folder = super().save_pretrained(folder)
        Manifest.read(self.folder / TRAINING_MANIFEST_DIR).rebased(folder / TRAINING_MANIFEST_DIR).write()
        return folder

    def class_index(self, label: str) -> int:
        if label not in self.classes:
            raise SonosynthError(f"{self.folder}: label {label!r} was not trained; this checkpoint knows {self.classes}.")
        return self.classes.index(label)

    def sample_groups(self, n: int, label: str | None, seed: int) -> list[SampleGroup]:
        parents = [self.folder / TRAINING_MANIFEST_DIR / MANIFEST_FILENAME]
        if label is not None:
            counts = {label: n}
        else:
            counts = {c: len(s) for c, s in zip(self.classes, round_robin(n, len(self.classes), 0), strict=True)}
        groups = []
        for name, count in counts.items():
            k = self.class_index(name)
            if count:
                groups.append(SampleGroup(self.folder.name, name, parents, image_seeds(seed, k, count), member=k))
        return groups

    def draw(self, group: SampleGroup, seeds: list[int], size: tuple[int, int] | None,
             settings: GuidedSampleSettings) -> np.ndarray:
        resolved = resolve_settings(self, settings.overrides())
        self.select(resolved.use_ema)
        return to_uint8(sample_batch(self, [group.member] * len(seeds), seeds, resolved).cpu().numpy())

    def recorded_settings(self, size: tuple[int, int] | None, settings: GuidedSampleSettings) -> dict[str, Any]:
        side = self.config.image_size
        if size is not None and tuple(size) != (side, side):
            raise SonosynthError(f"{self.folder}: this model samples {side}x{side} images only (asked {size}).")
        return recorded_settings(self, resolve_settings(self, settings.overrides()))


def load_model(checkpoint: str | Path, device: str = "auto", use_ema: bool = True) -> GuidedModel:
    model = GuidedModel.from_pretrained(checkpoint, device)
    assert isinstance(model, GuidedModel)
    return model.select(use_ema)


def resolve_settings(model: GuidedModel, overrides: dict[str, Any]) -> SampleConfig:
    """The checkpoint's sampling defaults with the caller's overrides; impossible combinations are errors."""
    try:
        settings = SampleConfig.model_validate({**model.config.sample.model_dump(), **overrides})
    except ValidationError as exc:
        raise SonosynthError(f"sampling settings: {format_validation_error(exc)}") from exc
    if settings.guidance == "classifier" and model.classifier is None:
        raise SonosynthError(f"{model.path}: classifier guidance asked for, but this checkpoint was trained without "
                             "a noisy classifier; use --set guidance=cfg or none.")
    total = model.config.schedule.num_train_timesteps
    if settings.sampler != "ddpm" and settings.steps > total:
        raise SonosynthError(f"sampling settings: steps={settings.steps} is more than the schedule's {total} "
                             "timesteps; lower steps.")
    return settings


def recorded_settings(model: GuidedModel, settings: SampleConfig) -> dict[str, Any]:
    """What goes into each synthetic row's `settings` (everything that changes the image, nothing else)."""
    steps = settings.steps if settings.sampler != "ddpm" else model.config.schedule.num_train_timesteps
    return {"guidance": settings.guidance, "scale": settings.scale if settings.guidance != "none" else None,
            "sampler": settings.sampler, "steps": steps, "eta": settings.eta if settings.sampler == "ddim" else None,
            "conditional": settings.conditional, "ema": settings.use_ema, "image_size": model.config.image_size}


def _noise(generators: list[torch.Generator], shape: tuple[int, ...], device: torch.device,
           channels_last: bool = False) -> torch.Tensor:
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
    return noise.contiguous(memory_format=torch.channels_last) if channels_last else noise


def _model_output(model: GuidedModel, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                  settings: SampleConfig) -> torch.Tensor:
    """The denoiser's output (epsilon or v, as trained); classifier-free guidance mixes the conditional and
    "no label" outputs, which is the same mix of their epsilons since both are linear in it at one x_t."""
    unconditional = torch.full_like(labels, null_label(len(model.classes)))
    with autocast(model.device, model.precision):
        if settings.guidance == "cfg":
            both = model.denoiser(torch.cat([x, x]), torch.cat([t, t]),
                                  class_labels=torch.cat([labels, unconditional])).float()
            conditional, free = both.chunk(2)
            return free + settings.scale * (conditional - free)
        return model.denoiser(x, t, class_labels=labels if settings.conditional else unconditional).float()


def classifier_gradient(classifier: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor,
                        precision: str = "fp32") -> torch.Tensor:
    """grad_x log p(y | x_t, t) for each image's own label."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        with autocast(x.device, precision):
            logits = classifier(x_in, t)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        chosen = log_probs[torch.arange(len(labels), device=x.device), labels]
        return torch.autograd.grad(chosen.sum(), x_in)[0].float()


@torch.no_grad()
def sample_batch(model: GuidedModel, labels: list[int], seeds: list[int], settings: SampleConfig) -> torch.Tensor:
    """Images in [-1, 1], (N, C, S, S); image i depends only on (labels[i], seeds[i], settings).

    Each step: the network's output -> (eps, x0); classifier guidance (DDIM, DPM-Solver++: on the
    score, moving eps and x0 together; DDPM: on the posterior mean); x0 clipped to [-1, 1]; then the
    sampler's step from the clipped x0 (DDIM recomputes eps from it, as ADM does). The last step of
    each sampler returns its x0, with no noise added.
    """
    device, abar, prediction = model.device, model.abar, model.config.schedule.prediction
    shape = model.config.diffusion_shape
    in_latent = model.config.latent.enabled
    clip = model.latent_clip if in_latent else 1.0
    layout = model.config.channels_last
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    y = torch.tensor(labels, dtype=torch.long, device=device)
    x = _noise(generators, shape, device, layout)
    total = model.config.schedule.num_train_timesteps
    solver = dpm_solver_scheduler(model.config.schedule, settings.steps) if settings.sampler == "dpm++" else None
    if solver is not None:
        timesteps = [int(t) for t in solver.timesteps]
    else:
        timesteps = list(range(total - 1, -1, -1)) if settings.sampler == "ddpm" else ddim_timesteps(total, settings.steps)
    guided = settings.guidance == "classifier"
    for i, t in enumerate(timesteps):
        t_batch = torch.full((len(labels),), t, dtype=torch.long, device=device)
        output = _model_output(model, x, t_batch, y, settings)
        grad = (settings.scale * classifier_gradient(model.classifier, x, t_batch, y, model.precision)
                if guided else None)
        if settings.sampler == "ddpm":
            noise = _noise(generators, shape, device, layout) if t > 0 else None
            x = ddpm_update(output, x, t, abar, prediction, noise, grad, clip)
        elif solver is not None:
            _, x0 = guided_x0(output, x, t, abar, prediction, grad, clip)
            x = solver.step(x0, t, x).prev_sample
        else:
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            noise = _noise(generators, shape, device, layout) if settings.eta > 0 and t_prev >= 0 else None
            x = ddim_update(output, x, t, t_prev, abar, prediction, settings.eta, noise, grad, clip)
    if in_latent:
        with autocast(device, model.precision):
            x = decode(model.autoencoder, x.float().contiguous(), model.latent_scale)
    return x.float().clamp(-1, 1).contiguous()


def image_seeds(base: int, class_index: int, count: int, offset: int = 0) -> list[int]:
    start = base + class_index * SEED_STRIDE + offset
    return list(range(start, start + count))


def sample_into(model: GuidedModel, out: str | Path, per_class: dict[str, int], seed: int = 0, seed_offset: int = 0,
                progress: bool = True, **overrides: Any) -> Manifest:
    """Write `per_class[label]` images of each label into the SyntheticSet `out`; resumes by seed."""
    settings = GuidedSampleSettings.model_validate(overrides)
    manifest = Manifest.from_rows([], out)
    for label, count in per_class.items():
        manifest = write_synthetic_set(model, GENERATOR_NAME, count, out, label=label, size=None,
                                       seed=seed + seed_offset, settings=settings, progress=progress)
    return manifest


def generate_rounds(checkpoint: str | Path, out: str | Path, per_class: int, rounds: int = 1,
                    labels: list[str] | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
                    **overrides: Any) -> list[Manifest]:
    """The study's generation: `rounds` SyntheticSets (out/round-1, ...) of `per_class` images of each label.

    Each round has its own seeds, so round 2 adds new images; re-running continues unfinished rounds and
    never writes more than `per_class` images of a label into a round.
    """
    if per_class < 1 or rounds < 1:
        raise SonosynthError("per_class and rounds must be at least 1.")
    if per_class * rounds > SEED_STRIDE:
        raise SonosynthError(f"at most {SEED_STRIDE} images per class over all rounds.")
    model = load_model(checkpoint, device)
    wanted = labels or model.classes
    for label in wanted:
        model.class_index(label)
    return [sample_into(model, Path(out) / f"round-{r + 1}", {label: per_class for label in wanted}, seed=seed,
                        seed_offset=r * per_class, progress=progress, **overrides) for r in range(rounds)]


@torch.no_grad()
def classify_images(model: GuidedModel, manifest: Manifest, t: int = 0, batch_size: int = 64) -> np.ndarray:
    """The noisy classifier's predicted class names for a manifest's images, read at timestep t (0: clean);
    latent diffusion: of their scaled latents, scale * mu(x), which is what that classifier was trained on."""
    from sonosynth.generators.guided.data import load_image

    if model.classifier is None:
        raise SonosynthError(f"{model.folder}: this checkpoint has no noisy classifier.")
    size, channels = model.config.image_size, model.config.in_channels
    paths = manifest.absolute_paths()
    predicted: list[int] = []
    for start in range(0, len(paths), batch_size):
        chunk = np.stack([load_image(p, size, channels) for p in paths[start:start + batch_size]])
        x = torch.from_numpy(chunk / 127.5 - 1.0).float().to(model.device)
        if model.autoencoder is not None:
            x = encode_mean(model.autoencoder, x, model.device).to(model.device) * model.latent_scale
        logits = model.classifier(x, torch.full((len(x),), t, dtype=torch.long, device=model.device))
        predicted.extend(logits.argmax(1).cpu().tolist())
    return np.asarray([model.classes[i] for i in predicted])
