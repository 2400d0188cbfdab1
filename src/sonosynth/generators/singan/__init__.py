"""SinGAN (Shaham et al., ICCV 2019): the single-image GAN baseline, one model per training image.

Importing this package registers the generator as "singan"; torch-heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import BaseGenerator, register_generator
from sonosynth.generators.singan.config import SinGANConfig


@register_generator("singan")
class SinGAN(BaseGenerator):
    name: ClassVar[str] = "singan"
    config_type: ClassVar[type[SinGANConfig]] = SinGANConfig
    presets: ClassVar[str] = "singan"

    @property
    def model_type(self):
        from sonosynth.generators.singan.checkpoints import SinGANModel

        return SinGANModel

    def fit(self, training: Manifest, out: Path, config: SinGANConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.generators.singan.training import fit

        return fit(training, out, config, device=device, resume=resume, progress=progress)


__all__ = ["SinGAN", "SinGANConfig"]
