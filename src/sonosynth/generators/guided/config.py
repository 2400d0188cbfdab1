"""The one typed configuration of the guided-diffusion generator (filled from presets/guided.yaml)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sonosynth.config import StrictModel
from sonosynth.generators.base import GeneratorConfig, SampleSettings
from sonosynth.generators.budget import Schedule


class ScheduleConfig(StrictModel):
    """The noise schedule (schedules.py builds MONAI's schedulers from it)."""

    num_train_timesteps: int = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 2e-2


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


class SampleConfig(StrictModel):
    """Defaults for sampling; every field can be overridden per call (GuidedSampleSettings)."""

    guidance: Literal["classifier", "cfg", "none"] = "classifier"
    scale: float = 3.0  # classifier-gradient scale, or the classifier-free weight w (w=1: plain conditional)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = 50  # DDIM steps; DDPM always walks the full schedule
    eta: float = 0.0
    conditional: bool = True  # feed the class label to the denoiser (False: the "no label" token)
    use_ema: bool = True


class GuidedSampleSettings(SampleSettings):
    """Per-call overrides of the checkpoint's `sample` defaults (None: the checkpoint's value)."""

    guidance: Literal["classifier", "cfg", "none"] | None = None
    scale: float | None = None
    sampler: Literal["ddim", "ddpm"] | None = None
    steps: int | None = None
    eta: float | None = None
    conditional: bool | None = None
    use_ema: bool | None = None

    def overrides(self) -> dict:
        return self.model_dump(exclude_none=True, exclude={"sample_batch_size"})


class GuidedConfig(GeneratorConfig):
    """seed, precision, sample_batch_size, budget and checkpoint_interval come from GeneratorConfig;
    reduced precision applies on CUDA only (on the CPU the guided generator trains in fp32)."""

    sample_batch_size: int = Field(32, ge=1, description="images generated together when sampling")
    image_size: int = 64
    in_channels: Literal[1, 3] = 1
    classes: list[str] | None = None  # default: every label in the training manifest
    unet: UNetConfig = UNetConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    resumable_fields: ClassVar[frozenset[str]] = GeneratorConfig.resumable_fields | {
        "train.steps", "train.checkpoint_every", "train.log_every", "sample"}

    def training_schedule(self) -> Schedule:
        warmup = self.train.warmup_steps
        return Schedule(steps=self.train.steps, lr_milestones=[warmup] if warmup else [],
                        checkpoint_every=self.train.checkpoint_every)

    def with_training_schedule(self, schedule: Schedule) -> GuidedConfig:
        train = {**self.train.model_dump(), "steps": schedule.steps, "checkpoint_every": schedule.checkpoint_every,
                 "warmup_steps": schedule.lr_milestones[0] if schedule.lr_milestones else 0}
        return self.model_validate({**self.model_dump(), "train": train})

    @model_validator(mode="after")
    def _size_divides(self) -> GuidedConfig:
        for name, net in (("unet", self.unet), ("classifier.network", self.classifier.network)):
            levels = len(net.channels)
            if self.image_size % (2 ** levels):
                raise ValueError(f"image_size {self.image_size} must be divisible by 2**{levels} ({name} levels)")
        return self
