"""The one typed configuration of the guided-diffusion generator (filled from presets/guided.yaml)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sonosynth.config import StrictModel
from sonosynth.generators.base import GeneratorConfig, SampleSettings
from sonosynth.generators.budget import Schedule


class ScheduleConfig(StrictModel):
    """The noise schedule (schedules.py builds MONAI's schedulers from it) and what the denoiser predicts."""

    num_train_timesteps: int = Field(1000, ge=2)
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = Field(1e-4, gt=0, lt=1)  # linear schedule only
    beta_end: float = Field(2e-2, gt=0, le=1)
    # epsilon: the network predicts the noise (Ho et al.; the fetal study). v: it predicts
    # v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), so x0 = sqrt(abar) x_t - sqrt(1 - abar) v
    # never divides by sqrt(abar); with epsilon, x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) multiplies
    # the network's error by 1/sqrt(abar) (about 20,000 at t = 999 of the cosine schedule).
    prediction: Literal["epsilon", "v"] = "epsilon"


class UNetConfig(StrictModel):
    """MONAI DiffusionModelUNet width; one entry per resolution level."""

    channels: list[int] = Field(default_factory=lambda: [32, 64, 64])
    attention_levels: list[bool] = Field(default_factory=lambda: [False, False, True])
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 16

    @model_validator(mode="after")
    def _levels_match(self) -> UNetConfig:
        if len(self.channels) != len(self.attention_levels):
            raise ValueError("channels and attention_levels need one entry per level")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every channel count must be a multiple of norm_num_groups={self.norm_num_groups}")
        return self


class ClassifierConfig(StrictModel):
    """The noisy classifier (MONAI DiffusionModelEncoder) used for classifier guidance."""

    enabled: bool = True
    network: UNetConfig = UNetConfig()
    lr: float = 3e-4
    weight_decay: float = 0.05
    batch_size: int = 16
    held_out_fraction: float = 0.15  # patients held out to report accuracy per noise level
    t_buckets: int = 4  # accuracy is reported for this many equal ranges of t


class TrainConfig(StrictModel):
    steps: int = 1000
    batch_size: int = 16  # per process under torchrun
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    label_dropout: float = 0.1  # p of replacing the label with the "no label" token (classifier-free guidance)
    hflip: bool = False  # random horizontal flips of the training images
    checkpoint_every: int = 500
    log_every: int = 50
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    # min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's MSE is weighted so that the
    # low-noise timesteps, whose SNR exceeds gamma, do not dominate the gradient; None: plain MSE.
    min_snr_gamma: float | None = Field(None, gt=0)


class SampleConfig(StrictModel):
    """Defaults for sampling; every field can be overridden per call (GuidedSampleSettings)."""

    guidance: Literal["classifier", "cfg", "none"] = "classifier"
    scale: float = 3.0  # classifier-gradient scale, or the classifier-free weight w (w=1: plain conditional)
    # ddim (Song et al.), ddpm (ancestral, every timestep), dpm++ (diffusers' DPMSolverMultistepScheduler,
    # the second-order DPM-Solver++ 2M, made for 20-25 steps)
    sampler: Literal["ddim", "ddpm", "dpm++"] = "ddim"
    steps: int = Field(50, ge=1)  # DDIM and DPM-Solver++ steps; DDPM always walks the full schedule
    eta: float = 0.0
    conditional: bool = True  # feed the class label to the denoiser (False: the "no label" token)
    use_ema: bool = True


class LatentConfig(StrictModel):
    """Latent diffusion (Rombach et al. 2022): a MONAI AutoencoderKL trained first on the training images;
    the denoiser and the noisy classifier then work on its scaled latents, and samples are decoded.

    The autoencoder minimises  rec(x, D(z)) + kl_weight * KL,  z = mu + sigma * e  (e ~ N(0, I)),
    rec the mean L1 or MSE per pixel and  KL = 0.5 * sum(mu^2 + sigma^2 - log(sigma^2) - 1) / batch
    (summed over latent elements, averaged over images, as MONAI's tutorials do). Deliberately simpler
    than the paper's first stage: no perceptual (LPIPS) and no patch-adversarial loss, so the decoder is
    blurrier but trains in minutes on a CPU. Its steps are its own: a wall-time `budget` sizes only the
    diffusion stage (the autoencoder trains first, for `steps`, before the budget probe).
    """

    enabled: bool = False
    # One entry per level; the encoder halves the side between levels, so the latent side is
    # image_size / 2**(len(channels) - 1) (MONAI's AutoencoderKL: no downsampling after the last level).
    channels: list[int] = Field(default_factory=lambda: [32, 64, 64])
    latent_channels: int = Field(4, ge=1)
    num_res_blocks: int = Field(1, ge=1)
    norm_num_groups: int = 16
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)
    kl_weight: float = Field(1e-6, ge=0)
    loss: Literal["l1", "mse"] = "l1"
    log_every: int = Field(100, ge=1)

    @property
    def factor(self) -> int:
        """How many image pixels one latent element spans along each side."""
        return 2 ** (len(self.channels) - 1)

    @model_validator(mode="after")
    def _groups_divide(self) -> LatentConfig:
        if not self.channels:
            raise ValueError("latent.channels needs at least one level")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every latent.channels entry must be a multiple of norm_num_groups={self.norm_num_groups}")
        return self


class GuidedSampleSettings(SampleSettings):
    """Per-call overrides of the checkpoint's `sample` defaults (None: the checkpoint's value)."""

    guidance: Literal["classifier", "cfg", "none"] | None = Field(
        None, description="classifier guidance, classifier-free guidance, or none")
    scale: float | None = Field(None, description="classifier-gradient scale, or the classifier-free weight w")
    sampler: Literal["ddim", "ddpm", "dpm++"] | None = Field(
        None, description="ddim, ddpm (every timestep) or dpm++ (DPM-Solver++ 2M, made for 20-25 steps)")
    steps: int | None = Field(None, ge=1, description="DDIM and DPM-Solver++ steps")
    eta: float | None = Field(None, description="DDIM noise (0: deterministic)")
    conditional: bool | None = Field(None, description="feed the class label to the denoiser")
    use_ema: bool | None = Field(None, description="sample with the EMA weights (the default) or the raw ones")

    def overrides(self) -> dict:
        return self.model_dump(exclude_none=True, exclude={"sample_batch_size"})


class GuidedConfig(GeneratorConfig):
    """seed, precision, sample_batch_size, budget and checkpoint_interval come from GeneratorConfig.

    `precision` applies to training and sampling on every device, except that fp16 (a GPU setting,
    the paper preset's) runs as fp32 on the CPU.
    """

    sample_batch_size: int = Field(32, ge=1, description="images generated together when sampling")
    # NHWC tensors for both networks: the layout oneDNN's CPU convolutions are fastest in, same math.
    channels_last: bool = False
    image_size: int = 64
    in_channels: Literal[1, 3] = 1
    classes: list[str] | None = None  # default: every label in the training manifest
    unet: UNetConfig = UNetConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()
    latent: LatentConfig = LatentConfig()  # off: pixel-space diffusion (the study's)

    resumable_fields: ClassVar[frozenset[str]] = GeneratorConfig.resumable_fields | {
        "train.steps", "train.checkpoint_every", "train.log_every", "sample", "channels_last"}

    def training_schedule(self) -> Schedule:
        warmup = self.train.warmup_steps
        return Schedule(steps=self.train.steps, lr_milestones=[warmup] if warmup else [],
                        checkpoint_every=self.train.checkpoint_every)

    def with_training_schedule(self, schedule: Schedule) -> GuidedConfig:
        train = {**self.train.model_dump(), "steps": schedule.steps, "checkpoint_every": schedule.checkpoint_every,
                 "warmup_steps": schedule.lr_milestones[0] if schedule.lr_milestones else 0}
        return self.model_validate({**self.model_dump(), "train": train})

    @property
    def diffusion_shape(self) -> tuple[int, int, int]:
        """(C, S, S) of the tensors the denoiser and the classifier see: the image, or its latent."""
        if self.latent.enabled:
            side = self.image_size // self.latent.factor
            return self.latent.latent_channels, side, side
        return self.in_channels, self.image_size, self.image_size

    @model_validator(mode="after")
    def _size_divides(self) -> GuidedConfig:
        side, what = self.image_size, f"image_size {self.image_size}"
        if self.latent.enabled:
            if self.image_size % self.latent.factor:
                raise ValueError(f"image_size {self.image_size} must be divisible by {self.latent.factor} "
                                 f"(the autoencoder's {len(self.latent.channels)} latent.channels levels)")
            side = self.image_size // self.latent.factor
            what = f"the latent side {side} (image_size / {self.latent.factor})"
        for name, net in (("unet", self.unet), ("classifier.network", self.classifier.network)):
            levels = len(net.channels)
            if side % (2 ** levels):
                raise ValueError(f"{what} must be divisible by 2**{levels} ({name} levels)")
        return self
