"""SinGAN (Shaham et al., ICCV 2019): the single-image GAN baseline, one model per training image.

Importing this package registers the generator as "singan"; torch-heavy modules load on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.generators.base import register_generator
from sonosynth.generators.singan.config import SinGANConfig


@register_generator("singan")
class SinGAN:
    name: ClassVar[str] = "singan"
    config_type: ClassVar[type[SinGANConfig]] = SinGANConfig
    presets: ClassVar[str] = "singan"

    def fit(self, training: Manifest, out: Path, config: SinGANConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.generators.singan.training import fit

        return fit(training, out, config, device=device, resume=resume, progress=progress)

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto",
               progress: bool = True, **settings: Any) -> Manifest:
        from sonosynth.generators.singan.sampling import sample

        return sample(checkpoint, n, out, label=label, size=size, seed=seed, device=device, progress=progress,
                      **settings)


__all__ = ["SinGAN", "SinGANConfig"]
