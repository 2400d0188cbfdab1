"""The Table-2-style summary (one row per generator) and writing a report folder."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sonosynth.atomic import atomic_path, write_text_atomic
from sonosynth.metrics.quality.memorization import copy_rates
from sonosynth.metrics.quality.report import QualityReport

TABLE_COLUMNS = [
    "generator", "images", "checkpoints", "sifid", "sifid_std", "ssim", "ssim_std", "fid", "kid", "kid_std",
    "copies", "copy_rate", "diversity_ssim", "crops_diversity_ssim", "diversity_feature", "crops_diversity_feature",
]
# The automatic reader's columns (mean over the classes a generator synthesised).
READER_COLUMNS = ["reader_auc", "reader_auc_lo", "reader_auc_hi", "reader_fake_detection", "reader_real_detection",
                  "reader_real_images", "reader_synthetic_images"]
OUTPUT_FILES = {
    "table": "quality.csv", "markdown": "quality.md", "per_image": "per_image.csv",
    "memorization": "memorization.csv", "most_copied": "most_copied.csv", "diversity": "diversity.csv",
    "reader": "reader.csv",
}


def generator_table(per_image: pd.DataFrame, set_scores: pd.DataFrame, memorization: pd.DataFrame,
                    diversity: pd.DataFrame, reader: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per generator; diversity is averaged over its checkpoints (each model's own samples),
    the reader's columns over the classes it synthesised (NaN when the reader did not run)."""
    grouped = per_image.groupby("generator")
    summary = pd.DataFrame({
        "images": grouped.size(),
        "checkpoints": grouped["checkpoint"].nunique(),
        "sifid": grouped["sifid"].mean(), "sifid_std": grouped["sifid"].std(ddof=0),
        "ssim": grouped["ssim"].mean(), "ssim_std": grouped["ssim"].std(ddof=0),
    })
    summary = summary.join(set_scores.set_index("generator")[["fid", "kid", "kid_std"]])
    summary = summary.join(copy_rates(memorization))
    diversity_columns = ["diversity_ssim", "crops_diversity_ssim", "diversity_feature", "crops_diversity_feature"]
    summary = summary.join(diversity.groupby("generator")[diversity_columns].mean())
    if reader is not None and not reader.empty:
        summary = summary.join(reader.groupby("generator")[[c for c in READER_COLUMNS if c in reader]].mean())
    for column in READER_COLUMNS:
        if column not in summary:
            summary[column] = np.nan
    return summary.reset_index(names="generator")[TABLE_COLUMNS + READER_COLUMNS]


def _number(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) >= 1000 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}"


def _with_std(mean: float, std: float) -> str:
    text = _number(mean)
    return text if text == "–" or math.isnan(std) else f"{text} ± {_number(std)}"


def _with_interval(value: float, low: float, high: float) -> str:
    text = _number(value, 2)
    return text if text == "–" or math.isnan(low) else f"{text} [{_number(low, 2)}, {_number(high, 2)}]"


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary with formatted cells (mean ± std, copies/images), for Markdown and the console."""
    rows = [{
        "generator": str(row.generator), "images": str(row.images),
        "SIFID ↓": _with_std(row.sifid, row.sifid_std), "SSIM": _with_std(row.ssim, row.ssim_std),
        "FID ↓": _number(row.fid), "KID ↓": _with_std(row.kid, row.kid_std),
        "copy rate ↓": f"{row.copies}/{row.images} ({row.copy_rate:.1%})",
        "diversity 1-SSIM (crops)": f"{_number(row.diversity_ssim)} ({_number(row.crops_diversity_ssim)})",
        "feature diversity (crops)": f"{_number(row.diversity_feature)} ({_number(row.crops_diversity_feature)})",
        "reader AUC [95% CI] ↓": _with_interval(row.reader_auc, row.reader_auc_lo, row.reader_auc_hi),
        "fakes detected ↓": "–" if math.isnan(row.reader_fake_detection) else f"{row.reader_fake_detection:.0%}",
    } for row in table.itertuples(index=False)]
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame, features: str) -> str:
    """The summary as Markdown, with a note saying what the columns mean."""
    shown = display_table(table)
    header = list(shown.columns) if len(shown) else ["generator"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    note = (f"\nFeatures for SIFID, FID, KID and feature diversity: {features}. SIFID and SSIM compare each "
            "synthetic image with its source training image (mean ± std over images); FID/KID compare each "
            "generator's samples with the real images of the same classes. A copy is a synthetic image whose "
            "nearest real image has NCC above the threshold. Diversity is the mean pairwise distance among one "
            "checkpoint's samples; in brackets the same for random crops of its training images. The automatic "
            "reader is a small CNN trained to tell each generator's samples from real images of patients the "
            "generator never saw (held-out halves grouped by patient and by model): ROC AUC 0.5 means it cannot, "
            "1.0 that it always can; 'fakes detected' is the share of samples it calls synthetic at the balanced "
            "threshold.\n")
    return "\n".join(lines) + "\n" + note


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_report(report: QualityReport, out: str | os.PathLike, title: str = "Synthetic image quality") -> dict[str, Path]:
    """Write every table of the report into `out` (each file atomically); returns the paths by kind."""
    out = Path(out)
    paths = {kind: out / name for kind, name in OUTPUT_FILES.items()}
    _write_csv(report.table, paths["table"])
    write_text_atomic(paths["markdown"], f"# {title}\n\n" + markdown_table(report.table, report.features))
    _write_csv(report.per_image, paths["per_image"])
    _write_csv(report.memorization, paths["memorization"])
    _write_csv(report.most_copied, paths["most_copied"])
    _write_csv(report.diversity, paths["diversity"])
    _write_csv(report.reader, paths["reader"])
    return paths
