"""The first stage of latent diffusion: a MONAI AutoencoderKL trained on the training images, its latents.

Latent diffusion (Rombach et al. 2022) trains the autoencoder once, encodes every training image to
the posterior mean mu(x), and multiplies the latents by one scale factor

    scale = 1 / std(mu(x))      (the standard deviation over every element of every training latent)

so that the diffusion model sees data of about unit variance, as its noise schedule assumes. The
denoiser and the noisy classifier are then trained on scale * mu(x) by the usual loop (training.py),
and a sample z is decoded as D(z / scale), clamped to [-1, 1].

The sampler clips its x0 prediction to [-clip, clip], clip = max |scale * mu(x)| over the training
latents: the latent analogue of clamping pixels to [-1, 1]. Rombach et al. do not clip latents; we
do because classifier guidance moves x0 by (1 - abar) / sqrt(abar) * grad, hundreds of times the
gradient at the noisiest steps, and without a bound (measured on POCUS, cpu-latent, 6 min) even a
guidance scale of 0.3 turned every sample into saturated blobs, where clipped ones keep the fan.

Resumable: the trained autoencoder is one file in the checkpoint folder (AUTOENCODER_NAME), written
atomically when its training ends, with a record of what it was trained on (its config, the seed and
a SHA-1 of the training pixels) and the scale. A fit that finds a matching file loads it instead of
training again; an interrupted autoencoder stage starts over (its draws are seeded, so it repeats).

Deliberate differences from the paper's first stage: no perceptual and no patch-adversarial loss (the
decoder is blurrier, but trains in minutes on a CPU); fp32 always (the autoencoder is small).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from monai.networks.nets import AutoencoderKL
from torch import nn

from sonosynth.atomic import write_text_atomic
from sonosynth.checkpoint import load_weights, save_weights
from sonosynth.errors import SonosynthError
from sonosynth.generators.guided.config import GuidedConfig
from sonosynth.generators.guided.data import TrainingTensors
from sonosynth.progress import task as progress_task

log = logging.getLogger(__name__)

AUTOENCODER_NAME = "autoencoder.safetensors"
AUTOENCODER_LOG = "autoencoder_log.csv"
WEIGHT_PREFIX = "autoencoder."  # its keys in model.safetensors
_RECORD_KEY = "sonosynth_autoencoder"


def build_autoencoder(config: GuidedConfig) -> AutoencoderKL:
    """MONAI's AutoencoderKL with no attention anywhere (the mid-block attention is off too: at 64 px
    the convolutions reach far enough, and attention is the slowest part on a CPU)."""
    latent = config.latent
    return AutoencoderKL(spatial_dims=2, in_channels=config.in_channels, out_channels=config.in_channels,
                         channels=tuple(latent.channels), latent_channels=latent.latent_channels,
                         num_res_blocks=latent.num_res_blocks, attention_levels=(False,) * len(latent.channels),
                         norm_num_groups=latent.norm_num_groups, with_encoder_nonlocal_attn=False,
                         with_decoder_nonlocal_attn=False)


def kl_loss(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) = 0.5 * sum(mu^2 + sigma^2 - log(sigma^2) - 1), summed per image, averaged."""
    per_image = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).flatten(1).sum(1)
    return per_image.mean()


def _generator(seed: int, step: int) -> torch.Generator:
    # Its own stream (odd multiplier), so it never coincides with a diffusion step's generators.
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 2 + 1)


def autoencoder_loss(autoencoder: nn.Module, images: torch.Tensor, config: GuidedConfig, step: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, KL) of one seeded random batch: rec(x, D(mu + sigma e)) + kl_weight * KL.

    The reparameterisation is written here rather than MONAI's `sampling` so that e comes from the
    step's seeded generator (MONAI draws from the global RNG).
    """
    latent = config.latent
    gen = _generator(config.seed, step)
    index = torch.randint(0, len(images), (latent.batch_size,), generator=gen)
    x = images[index]
    if config.train.hflip:  # the same augmentation the diffusion stage uses
        flip = torch.rand(len(index), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    x = x.to(device)
    mu, sigma = autoencoder.encode(x)
    e = torch.randn(mu.shape, generator=gen).to(device)
    reconstruction = autoencoder.decode(mu + sigma * e)
    rec = F.l1_loss(reconstruction, x) if latent.loss == "l1" else F.mse_loss(reconstruction, x)
    kl = kl_loss(mu, sigma)
    return rec + latent.kl_weight * kl, rec, kl


def train_autoencoder(images: torch.Tensor, config: GuidedConfig, device: torch.device,
                      progress: bool = False) -> tuple[AutoencoderKL, list[dict]]:
    """`latent.steps` AdamW steps from seeded initial weights; returns the trained network and its log."""
    torch.manual_seed(config.seed)
    autoencoder = build_autoencoder(config).to(device)
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=config.latent.lr)
    rows: list[dict] = []
    bar = progress_task("autoencoder", config.latent.steps, unit="step", tag="guided", enabled=progress)
    try:
        for step in range(config.latent.steps):
            total, rec, kl = autoencoder_loss(autoencoder, images, config, step, device)
            if not torch.isfinite(total):
                raise SonosynthError(f"the autoencoder diverged at step {step + 1} (loss {total.item():.4g}); "
                                     "lower latent.lr.")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            nn.utils.clip_grad_norm_(autoencoder.parameters(), config.train.grad_clip)
            optimizer.step()
            rows.append({"step": step + 1, "loss": total.item(), "reconstruction": rec.item(), "kl": kl.item()})
            bar.update(step + 1, reconstruction=rec.item(), kl=kl.item())
            if (step + 1) % config.latent.log_every == 0:
                log.info("autoencoder step %d: reconstruction %.4f, KL %.1f", step + 1, rec.item(), kl.item())
    finally:
        bar.close()
    return autoencoder.eval().requires_grad_(False), rows


@torch.no_grad()
def encode_mean(autoencoder: nn.Module, images: torch.Tensor, device: torch.device,
                batch_size: int = 64) -> torch.Tensor:
    """The posterior means mu(x) (unscaled), on the CPU."""
    chunks = [autoencoder.encode(images[i:i + batch_size].to(device))[0].float().cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)


def decode(autoencoder: nn.Module, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """Images in [-1, 1] from scaled latents: D(z / scale), clamped."""
    return autoencoder.decode(latents / scale).float().clamp(-1, 1)


def latent_scale(latents: torch.Tensor) -> float:
    """1 / std over every element (Rombach et al.'s scale factor), so the scaled latents have unit variance."""
    std = float(latents.float().std())
    if not std > 0:
        raise SonosynthError("the autoencoder's latents are constant; train it for more latent.steps.")
    return 1.0 / std


@dataclass(frozen=True)
class LatentStage:
    """The trained, frozen autoencoder and the scale of its latents."""

    autoencoder: AutoencoderKL
    scale: float
    clip: float  # max |scaled training latent|, the sampler's bound on x0

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{WEIGHT_PREFIX}{k}": v for k, v in self.autoencoder.state_dict().items()}


def _fingerprint(images: torch.Tensor, config: GuidedConfig) -> dict:
    """Everything the trained autoencoder depends on; a saved one is reused only when all of it matches."""
    pixels = hashlib.sha1(images.float().contiguous().numpy().tobytes()).hexdigest()
    latent = config.latent.model_dump(mode="json", exclude={"log_every"})
    return {"latent": latent, "seed": config.seed, "image_size": config.image_size, "in_channels": config.in_channels,
            "hflip": config.train.hflip, "grad_clip": config.train.grad_clip, "pixels_sha1": pixels}


def _read_saved(path: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    if not path.is_file():
        return None
    tensors, metadata = load_weights(path)
    return tensors, json.loads(metadata[_RECORD_KEY])


def prepare_stage(out: Path, images: torch.Tensor, config: GuidedConfig, device: torch.device, *, resuming: bool,
                  is_main: bool, barrier, progress: bool = False) -> LatentStage:
    """The autoencoder of `out`: loaded when its saved record matches, trained (by the main process) otherwise.

    `resuming` (the diffusion stage has a checkpoint): its latents came from the saved autoencoder, so a
    missing or different one is an error rather than a silent retraining.
    """
    path = out / AUTOENCODER_NAME
    fingerprint = _fingerprint(images, config)
    saved = _read_saved(path)
    matches = saved is not None and saved[1]["fingerprint"] == fingerprint
    if not matches and resuming:
        problem = "is missing" if saved is None else "was trained on other images or settings"
        raise SonosynthError(f"{path} {problem}, but the diffusion checkpoint in {out} was trained on its latents; "
                             "train into a new --out.")
    if not matches and is_main:
        if saved is not None:
            log.info("%s: trained with other settings or images; training the autoencoder again.", path)
        autoencoder, rows = train_autoencoder(images, config, device, progress)
        means = encode_mean(autoencoder, images, device)
        scale = latent_scale(means)
        clip = float((means * scale).abs().max())
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / AUTOENCODER_LOG, pd.DataFrame(rows).to_csv(index=False))
        record = {"fingerprint": fingerprint, "scale": scale, "clip": clip, "steps": config.latent.steps}
        save_weights(path, autoencoder.state_dict(), {_RECORD_KEY: json.dumps(record)})
    elif matches:
        log.info("%s: reusing the trained autoencoder.", path)
    barrier()  # under torchrun the other ranks wait for the main one's autoencoder, then all read the file
    tensors, record = _read_saved(path)
    autoencoder = build_autoencoder(config)
    autoencoder.load_state_dict(tensors)
    return LatentStage(autoencoder.to(device).eval().requires_grad_(False), float(record["scale"]),
                       float(record["clip"]))


def latent_tensors(stage: LatentStage, pixels: TrainingTensors, config: GuidedConfig,
                   device: torch.device) -> TrainingTensors:
    """The training set as scaled latents, scale * mu(x); with hflip also scale * mu(flip(x)).

    A flipped latent is not the latent of the flipped image (the learned kernels are not mirror
    symmetric), so flips are encoded, not applied to the latents.
    """
    latents = encode_mean(stage.autoencoder, pixels.images, device) * stage.scale
    flipped = (encode_mean(stage.autoencoder, pixels.images.flip(-1), device) * stage.scale
               if config.train.hflip else None)
    return TrainingTensors(latents, pixels.labels, pixels.classes, pixels.patients, flipped=flipped)
