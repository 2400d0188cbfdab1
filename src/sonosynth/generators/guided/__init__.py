"""Class-conditional diffusion with classifier guidance (the fetal-planes study's generator), plus
classifier-free guidance and DDIM. Networks and schedules come from MONAI; the loops are ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.generators.base import register_generator
from sonosynth.generators.guided.config import GuidedConfig


@register_generator("guided")
class GuidedGenerator:
    name: ClassVar[str] = "guided"
    config_type: ClassVar[type[GuidedConfig]] = GuidedConfig
    presets: ClassVar[str] = "guided"

    def fit(self, training: Manifest, out: Path, config: GuidedConfig, *, device: str = "auto",
            resume: bool = True, progress: bool = True) -> Path:
        from sonosynth.generators.guided.training import fit

        return fit(training, out, config, device=device, resume=resume, progress=progress)

    def sample(self, checkpoint: Path, n: int, out: Path, *, label: str | None = None,
               size: tuple[int, int] | None = None, seed: int = 0, device: str = "auto", progress: bool = True,
               **settings: Any) -> Manifest:
        """`n` images of `label` (of every trained class when label is None) at the training size."""
        from sonosynth.generators.guided.sampling import load_model, sample_into

        model = load_model(checkpoint, device, use_ema=settings.get("use_ema", True))
        side = model.config.image_size
        if size is not None and tuple(size) != (side, side):
            raise SonosynthError(f"{model.path}: this model samples {side}x{side} images only (asked {size}).")
        labels = [label] if label is not None else model.classes
        return sample_into(model, out, {lab: n for lab in labels}, seed=seed, progress=progress, **settings)


__all__ = ["GuidedConfig", "GuidedGenerator"]
