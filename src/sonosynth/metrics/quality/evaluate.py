"""All quality and privacy metrics of a SyntheticSet against the real data, in one pass."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError
from sonosynth.metrics.quality.config import QualityConfig
from sonosynth.metrics.quality.diversity import checkpoint_diversity
from sonosynth.metrics.quality.features import FeatureExtractor, pooled_features
from sonosynth.metrics.quality.frechet import feature_frechet_distance, kernel_inception_distance
from sonosynth.metrics.quality.images import ImageStore
from sonosynth.metrics.quality.memorization import audit_memorization, paired_sources
from sonosynth.metrics.quality.reader import SKIPPED_ROW, automatic_reader
from sonosynth.metrics.quality.report import QualityReport
from sonosynth.metrics.quality.sifid import sifid
from sonosynth.metrics.quality.ssim import ssim_to_source
from sonosynth.metrics.quality.table import generator_table
from sonosynth.progress import track

log = logging.getLogger(__name__)


def _only(manifest: Manifest, origin: str, role: str) -> Manifest:
    subset = manifest.where(manifest.table["origin"] == origin)
    if len(subset) == 0:
        raise InputDataError(f"{manifest.root}: no {origin} rows in the {role} manifest.")
    return subset


def source_scores(synthetic: Manifest, store: ImageStore, extractor: FeatureExtractor, size: int,
                  progress: bool = False) -> pd.DataFrame:
    """SSIM and SIFID of each synthetic image against its real source (NaN for rows without parents)."""
    sources = paired_sources(synthetic, store, size)
    records = []
    rows = list(zip(synthetic.absolute_paths(), sources, strict=True))
    for path, source in track(rows, "SSIM and SIFID against the source image", enabled=progress):
        if source is None:
            records.append((pd.NA, np.nan, np.nan))
            continue
        image, real = store.get(path), store.get(source)
        records.append((os.path.relpath(source, synthetic.root), ssim_to_source(image, real),
                        sifid(extractor, real, image)))
    source, ssim, sifid_values = zip(*records) if records else ((), (), ())
    table = synthetic.table
    return pd.DataFrame({
        "path": table["path"].astype(str).to_numpy(), "generator": table["generator"].astype(str).to_numpy(),
        "checkpoint": table["checkpoint"].astype(object).to_numpy(), "label": table["label"].astype(str).to_numpy(),
        "source": list(source), "ssim": np.asarray(ssim, dtype=float), "sifid": np.asarray(sifid_values, dtype=float),
    })


def set_scores(synthetic: Manifest, synthetic_features: np.ndarray, real: Manifest, real_features: np.ndarray,
               config: QualityConfig) -> pd.DataFrame:
    """FID and KID of each generator's samples against the real images of the classes it synthesised."""
    rows = []
    generators = synthetic.table["generator"].astype(str).to_numpy()
    real_labels = real.table["label"].astype(str).to_numpy()
    for generator in sorted(set(generators)):
        mine = generators == generator
        labels = set(synthetic.table["label"].astype(str).to_numpy()[mine])
        reference = real_features[np.isin(real_labels, list(labels))]
        ours = synthetic_features[mine]
        row = {"generator": generator, "real_images": len(reference), "fid": np.nan, "kid": np.nan, "kid_std": np.nan}
        if len(ours) >= 2 and len(reference) >= 2:
            row["fid"] = feature_frechet_distance(reference, ours)
            row["kid"], row["kid_std"] = kernel_inception_distance(
                reference, ours, config.kid_subsets, config.kid_subset_size, config.seed)
        rows.append(row)
    return pd.DataFrame(rows)


def source_patients(synthetic: Manifest, real: Manifest) -> set[str]:
    """Patients of the real images any synthetic row was made from (its parents found in `real`)."""
    # Parent paths are relative to the synthetic set's folder ("../data/..."): compare normalised paths.
    patient_of = dict(zip(map(os.path.normpath, real.absolute_paths()), real.table["patient_id"].astype(str),
                          strict=True))
    parents = {os.path.normpath(p) for row in synthetic.parent_paths() for p in row}
    return {patient_of[p] for p in parents if p in patient_of}


def reader_scores(synthetic: Manifest, unseen: Manifest, store: ImageStore, config: QualityConfig,
                  progress: bool = False) -> pd.DataFrame:
    """The automatic reader per (generator, class): its samples against real images of `unseen` patients.

    Every generator of the set meets the same real images (those of the class in `unseen`), so their
    AUCs compare. Too few images on a side is a logged skip (NaN row), not an error.
    """
    rows = []
    table = synthetic.table
    paths = synthetic.absolute_paths()
    models = table["checkpoint"].astype(object).where(table["checkpoint"].notna(), table["generator"]).astype(str)
    unseen_labels = unseen.table["label"].astype(str).to_numpy()
    unseen_paths = unseen.absolute_paths()
    pairs = sorted(set(zip(table["generator"].astype(str), table["label"].astype(str))))
    for generator, label in track(pairs, "automatic reader", enabled=progress):
        mine = np.flatnonzero((table["generator"].astype(str) == generator).to_numpy()
                              & (table["label"].astype(str) == label).to_numpy())
        real_index = np.flatnonzero(unseen_labels == label)
        row: dict[str, object] = {"generator": generator, "label": label}
        try:
            result = automatic_reader(
                store.get_many([unseen_paths[i] for i in real_index]),
                unseen.table["patient_id"].astype(str).to_numpy()[real_index],
                store.get_many([paths[i] for i in mine]), models.to_numpy()[mine], config.reader)
            row.update(result.row())
        except InputDataError as exc:
            log.warning("automatic reader skipped for %s / %s: %s", generator, label, exc)
            row.update(SKIPPED_ROW)
        rows.append(row)
    return pd.DataFrame(rows)


def evaluate_quality(synthetic: Manifest, real: Manifest, extractor: FeatureExtractor,
                     config: QualityConfig | None = None, progress: bool = False,
                     reader_real: Manifest | None = None) -> QualityReport:
    """SIFID, SSIM, FID, KID, memorization, diversity and the automatic reader of the synthetic rows.

    `real` holds the generators' training side (sources, the memorization audit's pool, FID/KID's
    reference). The automatic reader's real side is `reader_real` (default `real`) without any patient
    a synthetic image was made from, so the reader only ever meets patients the generators never saw.
    """
    config = config or QualityConfig()
    synthetic, real = _only(synthetic, "synthetic", "synthetic"), _only(real, "real", "real")
    store = ImageStore()
    reader = pd.DataFrame()
    if config.reader_enabled:
        pool = _only(reader_real, "real", "reader's real") if reader_real is not None else real
        seen = source_patients(synthetic, real) | source_patients(synthetic, pool)
        unseen = pool.where(~pool.table["patient_id"].astype(str).isin(seen))
        reader = reader_scores(synthetic, unseen, store, config, progress)
    per_image = source_scores(synthetic, store, extractor, config.audit_size, progress)
    synthetic_features = pooled_features(extractor, store.get_many(synthetic.absolute_paths()), config.batch_size,
                                         progress, "features of synthetic images")
    real_features = pooled_features(extractor, store.get_many(real.absolute_paths()), config.batch_size,
                                    progress, "features of real images")
    sets = set_scores(synthetic, synthetic_features, real, real_features, config)
    audit = audit_memorization(synthetic, real, store, config.threshold, config.audit_size, config.top_copied,
                               progress)
    diversity = checkpoint_diversity(synthetic, synthetic_features, extractor, store, config.diversity_samples,
                                     config.crop_fraction, config.seed, config.batch_size, progress)
    table = generator_table(per_image, sets, audit.details, diversity, reader)
    return QualityReport(table, per_image, sets, audit.details, audit.most_copied, diversity, reader,
                         extractor.description, getattr(extractor, "fingerprint", ""))
