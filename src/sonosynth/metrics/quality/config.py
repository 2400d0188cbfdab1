"""Settings of the image-quality and privacy metrics, as a typed model filled from `presets/quality.yaml`."""

from __future__ import annotations

from pydantic import Field

from sonosynth.config import StrictModel
from sonosynth.metrics.quality.reader import ReaderConfig


class QualityConfig(StrictModel):
    threshold: float = Field(0.95, gt=0, le=1, description="NCC above which a synthetic image counts as a near-copy")
    audit_size: int = Field(128, ge=16, le=1024,
                            description="common side for the nearest-neighbour search (both sets resized to it)")
    inception_size: int = Field(299, ge=75, le=1024,
                                description="input side for Inception pool features (FID/KID), as pytorch-fid does")
    kid_subsets: int = Field(100, ge=1, description="random subsets averaged for KID")
    kid_subset_size: int = Field(1000, ge=2, description="images per KID subset (capped by the set sizes)")
    diversity_samples: int = Field(32, ge=2, description="at most this many samples per checkpoint for diversity")
    crop_fraction: float = Field(0.8, gt=0, le=1,
                                 description="side of the reference random crops as a fraction of the training image")
    top_copied: int = Field(20, ge=1, description="rows in the most-copied training images table")
    batch_size: int = Field(16, ge=1, description="images per feature-extractor batch")
    seed: int = Field(0, description="seed for KID subsets, diversity draws and reference crops")
    reader_enabled: bool = Field(True, description="run the automatic reader (classifier two-sample test)")
    reader: ReaderConfig = ReaderConfig()


def load_quality_config(preset: str = "cpu", overrides: dict | None = None) -> QualityConfig:
    from sonosynth.config import load_config

    return load_config(QualityConfig, "quality", preset, overrides)
