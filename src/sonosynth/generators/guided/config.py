"""The one typed configuration of the guided-diffusion generator (filled from presets/guided.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sonosynth.config import StrictModel
from sonosynth.generators.guided.schedules import ScheduleConfig


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
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # reduced precision applies on CUDA only
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    threads: int | None = None  # torch CPU threads per process (None: torch's default)


class SampleConfig(StrictModel):
    """Defaults for sampling; every field can be overridden per call."""

    guidance: Literal["classifier", "cfg", "none"] = "classifier"
    scale: float = 3.0  # classifier-gradient scale, or the classifier-free weight w (w=1: plain conditional)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = 50  # DDIM steps; DDPM always walks the full schedule
    eta: float = 0.0
    conditional: bool = True  # feed the class label to the denoiser (False: the "no label" token)
    batch_size: int = 32
    use_ema: bool = True


class GuidedConfig(StrictModel):
    image_size: int = 64
    in_channels: Literal[1, 3] = 1
    classes: list[str] | None = None  # default: every label in the training manifest
    unet: UNetConfig = UNetConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    @model_validator(mode="after")
    def _size_divides(self) -> GuidedConfig:
        for name, net in (("unet", self.unet), ("classifier.network", self.classifier.network)):
            levels = len(net.channels)
            if self.image_size % (2 ** levels):
                raise ValueError(f"image_size {self.image_size} must be divisible by 2**{levels} ({name} levels)")
        return self
