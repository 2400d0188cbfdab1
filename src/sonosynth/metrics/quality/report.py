"""The result of `evaluate_quality`: every table it computes, and which feature space it used."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class QualityReport:
    table: pd.DataFrame  # one row per generator (the Table-2-style summary)
    per_image: pd.DataFrame  # SSIM and SIFID of each synthetic image against its source
    set_scores: pd.DataFrame  # FID and KID per generator
    memorization: pd.DataFrame  # nearest real image, NCC, SSIM, flag per synthetic image
    most_copied: pd.DataFrame
    diversity: pd.DataFrame  # one row per checkpoint
    reader: pd.DataFrame  # the automatic reader per (generator, class); empty when it did not run
    features: str  # which feature space SIFID/FID/KID/feature diversity were computed in
    features_sha1: str = ""  # hash of that feature space's weights
