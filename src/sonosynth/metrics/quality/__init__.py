"""Image-quality and privacy metrics for synthetic sets: SSIM, SIFID, FID/KID, diversity, memorization, the automatic reader."""

from sonosynth.metrics.quality.config import QualityConfig, load_quality_config
from sonosynth.metrics.quality.diversity import checkpoint_diversity, mean_pairwise_dissimilarity
from sonosynth.metrics.quality.evaluate import evaluate_quality
from sonosynth.metrics.quality.features import RANDOM_CNN, FeatureExtractor, create_extractor
from sonosynth.metrics.quality.frechet import (
    feature_frechet_distance,
    frechet_distance,
    gaussian_statistics,
    kernel_inception_distance,
)
from sonosynth.metrics.quality.memorization import MemorizationAudit, audit_memorization
from sonosynth.metrics.quality.reader import ReaderConfig, ReaderResult, automatic_reader
from sonosynth.metrics.quality.report import QualityReport
from sonosynth.metrics.quality.sifid import sifid
from sonosynth.metrics.quality.ssim import ssim, ssim_batch, ssim_to_source
from sonosynth.metrics.quality.table import display_table, markdown_table, write_report

__all__ = [
    "RANDOM_CNN", "FeatureExtractor", "MemorizationAudit", "QualityConfig", "QualityReport", "ReaderConfig",
    "ReaderResult", "audit_memorization", "automatic_reader", "checkpoint_diversity", "create_extractor", "display_table", "evaluate_quality", "feature_frechet_distance",
    "frechet_distance", "gaussian_statistics", "kernel_inception_distance", "load_quality_config", "markdown_table",
    "mean_pairwise_dissimilarity", "sifid", "ssim", "ssim_batch", "ssim_to_source", "write_report",
]
