"""SinDDMConfig: every setting of SinDDM/FewDDM training and sampling, with its reason.

Presets live in sonosynth/presets/sinddm.yaml (smoke, cpu, paper). The model-defining fields default
to the official code's values; the speed fields default to the fastest setting that does not change
what the model learns (see benchmarks/sinddm_speed.py and the numbers quoted below).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from sonosynth.generators.base import GeneratorConfig, SampleSettings
from sonosynth.generators.budget import Schedule


class SinDDMConfig(GeneratorConfig):
    """SinDDM (one training image) and FewDDM (several) share this config (seed, precision, sample_batch_size,
    budget and checkpoint_interval come from GeneratorConfig)."""

    # ---------------------------------------------------------------- images and pyramid (official values)
    channels: Literal[1, 3] = Field(1, description="1 = grayscale (the normal case), 3 = RGB.")
    max_pixels: int = Field(50_000, ge=64, description="finest scale is shrunk to at most this many pixels "
                            "(official auto_scale=50000; the cpu preset uses 128x128)")
    scale_step: float = Field(1.411, gt=1.0, description="nominal ratio between scales (re-fitted per image)")
    coarsest_area: float = Field(3110, gt=0, description="coarsest scale area in px^2 before clamping")
    coarsest_min: int = Field(42, ge=4, description="coarsest side is clamped to [coarsest_min, coarsest_max]")
    coarsest_max: int = Field(55, ge=4)
    blur_level: Literal["official", "float"] = Field(
        "official", description="'official' reproduces the uint8 wrap-around of the reference code, which sets "
        "the study's gamma schedule and start steps; 'float' is the signed difference the formula intends "
        "(it gives start steps near 0, i.e. almost no denoising at the fine scales)")

    # ---------------------------------------------------------------- diffusion and network
    timesteps: int = Field(100, ge=2, description="T, diffusion steps per scale")
    dim: int = Field(160, ge=2, description="widest channel count; blocks are dim/2, dim, dim, dim/2")

    image_embedding: bool = Field(
        False, description="FewDDM (several training images): a learned vector per training image conditions "
        "the coarsest scale, and each sample follows one image's layout (sample seed s uses image s mod k); "
        "off, the official network, whose coarsest scale blends the k layouts. Not in the study or the "
        "official code; see network.py")

    blurry_input: bool = Field(
        False, description="the finer scales also take the upsampled coarser image x~ as input channels (as "
        "cascaded diffusion models condition on the low-resolution image), so a finer scale refines the layout it "
        "is given instead of re-drawing it from x~ buried in noise; the coarsest scale gets zeros. Off: the "
        "official network, which sees x~ only through the noisy x_t. Not in the study or the official code; see "
        "network.py")

    prediction: Literal["epsilon", "v"] = Field(
        "epsilon", description="what the denoiser outputs. 'epsilon' (official code): the noise. 'v' (Salimans & Ho "
        "2022): v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0, converted to eps for the sampler. At the noisiest steps an "
        "eps-model's x0 estimate divides its error by sqrt(ab_t) (about 1/300 at t = T-1 of the cosine schedule), "
        "so an undertrained model clamps its early x0 guesses to +-1 and the coarsest scale lays out saturated "
        "blobs; a v-model predicts about -x0 there and its early guesses are the learned mean layout. Same "
        "network, same L1 loss on its own target; not in the study or the official code")

    # ---------------------------------------------------------------- optimisation (official values)
    train_steps: int = Field(120_000, ge=1, description="optimizer steps (may be raised on resume)")
    batch_size: int = Field(32, ge=1, description="noisy copies of the drawn scale/image per step")
    lr: float = Field(1e-3, gt=0)
    lr_milestones: list[int] = Field([20_000, 40_000, 70_000, 80_000, 90_000, 110_000],
                                     description="steps at which the learning rate is multiplied by lr_decay")
    lr_decay: float = Field(0.5, gt=0, le=1)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    ema_start: int = Field(2000, ge=0, description="before this step the EMA is a copy of the model")
    ema_every: int = Field(10, ge=1, description="EMA update period in steps")
    scale_sampling: Literal["uniform", "equal_time"] = Field(
        "uniform", description="how each step picks its scale. 'uniform' (official): every scale equally often, "
        "so the fine scales, up to 16x the pixels of the coarsest, take most of the time. 'equal_time': "
        "probability inversely proportional to the scale's pixels per step (after cropping), so every scale "
        "gets the same compute and the coarsest, which alone sets the global layout, gets many more steps. "
        "It changes what a short run learns (not the loss), so it is a model setting, not a speed switch; the "
        "cpu preset uses it because a short uniform run leaves the coarsest scale too few steps to learn the "
        "source's global structure")
    checkpoint_every: int = Field(1000, ge=1, description="steps between atomic checkpoint writes")

    # ---------------------------------------------------------------- speed
    # precision and memory format change only rounding; crops change which pixels a step counts, never a
    # counted pixel's loss. benchmarks/sinddm_speed.py measures each against plain fp32 full-image training.
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast precision; 'auto' = bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else "
        "fp32 (emulated bf16 is slower than fp32)")
    channels_last: bool = Field(True, description="NHWC memory format, the layout oneDNN and GPU tensor cores "
                                "prefer")
    compiled_depthwise_grad: bool = Field(
        True, description="on the CPU, the depthwise 5x5 convolutions' weight gradient runs as a kernel compiled by "
        "torch.compile instead of oneDNN's, which dominates a CPU training step (see generators/sinddm/depthwise.py); "
        "the same math, float32 accumulation. Falls back to the stock gradient without a C++ compiler")
    crop_size: int | None = Field(
        96, ge=40, description="train scales larger than this on random crops (one window per batch element, "
        "the same window in sharp and blurry). The loss counts only pixels at least 16 px (the receptive-field "
        "radius) from a window edge that is not an image edge, so each counted pixel's loss equals its "
        "full-image loss (tested) and the network never sees false borders. None = full images (official)")

    # ---------------------------------------------------------------- sampling
    sample_stride: int = Field(1, ge=1, description="1 = every timestep (official); k = about 1/k of the steps "
                               "per scale, DDIM-like respacing (faster, smoother speckle as k grows; "
                               "benchmarks/sinddm_speed.py measures it); the default stays official")
    sample_gamma_max: float = Field(0.55, ge=0, lt=1, description="blend weight clamp g during sampling "
                                    "(official 0.55). A fine-scale step takes sharp = x~ + (x0_mix - x~) / (1 - g): "
                                    "what the network adds to the upsampled coarser sample x~, detail and error "
                                    "alike, is multiplied by 1 / (1 - g), and the excess compounds over the "
                                    "scales. An undertrained model's error then turns mid-grey into black holes "
                                    "and raises the contrast above the source's; 0 takes the network's estimate "
                                    "as it is (see sampling.py)")
    scale_mul: tuple[float, float] = Field((1.0, 1.0), description="(height, width) multiplier of the output "
                                           "size relative to the training size (official --scale_mul)")

    @field_validator("lr_milestones")
    @classmethod
    def _sorted(cls, value: list[int]) -> list[int]:
        return sorted(value)

    @model_validator(mode="after")
    def _coarsest_range(self) -> SinDDMConfig:
        if self.coarsest_min > self.coarsest_max:
            raise ValueError("coarsest_min must not exceed coarsest_max")
        if self.dim % 2:
            raise ValueError("dim must be even")
        return self

    # A run can be extended (train_steps) or moved to another device (precision and memory format change
    # only rounding); the sampling fields do not touch training at all.
    resumable_fields: ClassVar[frozenset[str]] = GeneratorConfig.resumable_fields | {
        "train_steps", "checkpoint_every", "channels_last", "compiled_depthwise_grad", "sample_stride",
        "sample_gamma_max", "scale_mul"}

    def training_schedule(self) -> Schedule:
        return Schedule(steps=self.train_steps, lr_milestones=self.lr_milestones, ema_start=self.ema_start,
                        checkpoint_every=self.checkpoint_every)

    def with_training_schedule(self, schedule: Schedule) -> SinDDMConfig:
        return self.model_validate({**self.model_dump(), "train_steps": schedule.steps,
                                    "lr_milestones": schedule.lr_milestones, "ema_start": schedule.ema_start,
                                    "checkpoint_every": schedule.checkpoint_every})


class SinDDMSampleSettings(SampleSettings):
    """Per-call overrides of the config's sampling fields (None: the checkpoint's value)."""

    stride: int | None = Field(None, ge=1, description="overrides sample_stride")
    scale_mul: tuple[float, float] | None = Field(None, description="overrides scale_mul")
    gamma_max: float | None = Field(None, ge=0, lt=1, description="overrides sample_gamma_max")
    precision: Literal["auto", "fp32", "bf16"] | None = Field(None, description="overrides precision")


__all__ = ["SinDDMConfig", "SinDDMSampleSettings"]
