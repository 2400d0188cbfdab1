"""SinGAN settings: one typed model, filled from `sonosynth/presets/singan.yaml`.

Field defaults are the original SinGAN defaults (Shaham et al., ICCV 2019, and its public code);
the `paper` preset keeps them, `cpu` shrinks the pyramid and the iterations for a 2-core machine.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sonosynth.generators.base import GeneratorConfig
from sonosynth.generators.budget import Schedule


class SinGANConfig(GeneratorConfig):
    """SinGAN's settings (seed, precision, sample_batch_size, budget, checkpoint_interval: GeneratorConfig).

    SinGAN trains in fp32 only; `precision` is fixed to fp32 so no setting is silently ignored.
    """

    # Pyramid: the image is first shrunk so its longer side is at most max_size; the coarsest
    # scale has its shorter side at min_size; scale_factor is the nominal ratio between scales
    # (the exact ratio is adjusted so that the two ends meet).
    scale_factor: float = Field(0.75, gt=0.0, lt=1.0)
    min_size: int = Field(25, ge=11)  # 11: five 3x3 valid convs need more than 10 px
    max_size: int = Field(250, ge=12)

    # Networks: per scale a generator and a discriminator of `num_layers` conv blocks.
    num_layers: int = Field(5, ge=3)
    kernel_size: int = Field(3, ge=1)
    base_channels: int = Field(32, ge=1)  # width at the coarsest scale
    min_channels: int = Field(32, ge=1)
    max_channels: int = Field(128, ge=1)
    double_every: int = Field(4, ge=1)  # widths double every this many scales, up to max_channels
    channels: Literal[1, 3] = 1  # 1: grayscale (the normal case); 3: RGB

    # Optimisation, per scale.
    iterations: int = Field(2000, ge=1)
    lr_g: float = Field(5e-4, gt=0)
    lr_d: float = Field(5e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    lr_drop_at: int = Field(1600, ge=0)  # iteration from which both learning rates are multiplied by lr_gamma
    lr_gamma: float = Field(0.1, gt=0)
    g_steps: int = Field(3, ge=1)
    d_steps: int = Field(3, ge=1)
    gp_weight: float = Field(0.1, ge=0)  # WGAN-GP gradient penalty weight (lambda)
    rec_weight: float = Field(10.0, ge=0)  # reconstruction loss weight (alpha)
    noise_amp: float = Field(0.1, gt=0)  # noise std at a scale = noise_amp * RMSE of the reconstruction below

    # Bookkeeping.
    checkpoint_every: int = Field(200, ge=1)  # iterations between resumable mid-scale checkpoints
    precision: Literal["fp32"] = "fp32"
    sample_batch_size: int = Field(8, ge=1, description="images generated together when sampling")

    # Finished scales cannot be retrained, so only bookkeeping may change on resume.
    resumable_fields: ClassVar[frozenset[str]] = GeneratorConfig.resumable_fields | {"checkpoint_every"}

    def training_schedule(self) -> Schedule:
        """One schedule step is one iteration at every scale of every image (the LR drop is the milestone)."""
        return Schedule(steps=self.iterations, lr_milestones=[self.lr_drop_at], checkpoint_every=self.checkpoint_every)

    def with_training_schedule(self, schedule: Schedule) -> SinGANConfig:
        return self.model_validate({**self.model_dump(), "iterations": schedule.steps,
                                    "lr_drop_at": schedule.lr_milestones[0], "checkpoint_every": schedule.checkpoint_every})

    @model_validator(mode="after")
    def _consistent(self) -> SinGANConfig:
        if self.min_size >= self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must be smaller than max_size ({self.max_size})")
        if (self.kernel_size - 1) * self.num_layers >= self.min_size:
            raise ValueError("the coarsest scale (min_size) must be larger than the generator's border loss "
                             f"({(self.kernel_size - 1) * self.num_layers} px)")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd so the generator's border loss is symmetric")
        return self

    def widths(self, scale: int) -> tuple[int, int]:
        """(channels, min_channels) of the networks at a scale: doubling every `double_every` scales, capped."""
        factor = 2 ** (scale // self.double_every)
        return min(self.base_channels * factor, self.max_channels), min(self.min_channels * factor, self.max_channels)
