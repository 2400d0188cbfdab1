"""Class-conditional diffusion with classifier guidance (the fetal-planes study's generator), plus
classifier-free guidance, DDIM and DPM-Solver++; optionally in the latent space of a MONAI
AutoencoderKL trained first (`latent`, preset cpu-latent; latent.py). Networks and schedules come from
MONAI, DPM-Solver++ from diffusers; the loops are ours."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import BaseGenerator, register_generator
from sonosynth.generators.guided.config import GuidedConfig, GuidedSampleSettings


@register_generator("guided")
class GuidedGenerator(BaseGenerator):
    """`sample` writes `n` images of the asked label (with no label, `n` dealt round-robin over the classes)."""

    name: ClassVar[str] = "guided"
    config_type: ClassVar[type[GuidedConfig]] = GuidedConfig
    settings_type: ClassVar[type[GuidedSampleSettings]] = GuidedSampleSettings  # torch-free, for the CLI's help
    presets: ClassVar[str] = "guided"
    distributed_fit: ClassVar[bool] = True  # `fit` joins a torchrun-style process group (distributed.py)

    @property
    def model_type(self):
        from sonosynth.generators.guided.sampling import GuidedModel

        return GuidedModel

    def fit(self, training: Manifest, out: Path, config: GuidedConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.generators.guided.training import fit

        return fit(training, out, config, device=device, resume=resume, progress=progress)


__all__ = ["GuidedConfig", "GuidedGenerator", "GuidedSampleSettings"]
