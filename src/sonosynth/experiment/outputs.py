"""What a finished unit leaves in its cache folder, and the check that it is still all there and readable.

The cache reuses a finished unit only after its outputs pass `check`; a damaged unit (a truncated
JSON, a CSV missing a column, a deleted sample) is named with the file at fault and recomputed,
never trusted blindly and never allowed to crash the results collector with a parser traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sonosynth.errors import SonosynthError

CLASSIFY_METRICS = "metrics.json"
CLASSIFY_CONFUSION = "confusion.csv"
CLASSIFY_MODEL = "model.pt"
CLASSIFY_RUN = "run.json"  # what ran: regime, config, stopping patients, stages
CLASSIFY_LOSSES = "losses.csv"  # per stage and epoch
FEATURES_MODEL = "model.pt"  # the domain feature network (classify/domain.py writes these two)
FEATURES_RECORD = "domain.json"  # how it was trained: classes, images, stopping patients, checkpoint sha1
FEATURES_RECORD_KEYS = ("sha1", "classes", "stop_patients", "best_epoch")
QUALITY_TABLE = "quality.csv"
QUALITY_MEMORIZATION = "memorization.csv"
QUALITY_MOST_COPIED = "most_copied.csv"
QUALITY_READER = "reader.csv"
SAMPLES_DIR = "samples"
MODEL_DIR = "model"

METRIC_KEYS = ("accuracy", "balanced_accuracy", "per_class")
PER_CLASS_KEYS = ("precision", "recall", "f1", "support")
MEMORIZATION_COLUMNS = ("flagged",)


class DamagedOutput(SonosynthError):
    """A finished unit's output file is missing or unreadable."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path.name}: {reason}")
        self.path = path
        self.reason = reason


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise DamagedOutput(path, "missing")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DamagedOutput(path, f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise DamagedOutput(path, "not a JSON object")
    return value


def read_csv(path: Path, columns: tuple[str, ...] = (), **options) -> pd.DataFrame:
    if not path.is_file():
        raise DamagedOutput(path, "missing")
    try:
        table = pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedOutput(path, f"not a readable CSV table ({str(exc).strip()})") from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DamagedOutput(path, f"missing column(s) {missing}")
    return table


def read_json_with_keys(path: Path, keys) -> dict:
    """A unit's JSON record, refused as damaged when one of `keys` is missing."""
    values = read_json(path)
    missing = [k for k in keys if k not in values]
    if missing:
        raise DamagedOutput(path, f"missing key(s) {missing}")
    return values


def read_metrics(folder: Path) -> dict:
    path = folder / CLASSIFY_METRICS
    metrics = read_json_with_keys(path, METRIC_KEYS)
    if not isinstance(metrics["per_class"], dict) or not metrics["per_class"]:
        raise DamagedOutput(path, "per_class holds no classes")
    for label, values in metrics["per_class"].items():
        if not isinstance(values, dict) or any(k not in values for k in PER_CLASS_KEYS):
            raise DamagedOutput(path, f"per_class[{label!r}] lacks one of {list(PER_CLASS_KEYS)}")
    return metrics


def read_confusion(folder: Path) -> pd.DataFrame:
    path = folder / CLASSIFY_CONFUSION
    confusion = read_csv(path, index_col=0)
    if confusion.empty or not all(pd.api.types.is_numeric_dtype(t) for t in confusion.dtypes):
        raise DamagedOutput(path, "not a confusion matrix of counts")
    return confusion


def read_quality(folder: Path) -> pd.DataFrame:
    table = read_csv(folder / QUALITY_TABLE)
    if table.empty:
        raise DamagedOutput(folder / QUALITY_TABLE, "no rows")
    return table


def read_memorization(folder: Path) -> pd.DataFrame:
    return read_csv(folder / QUALITY_MEMORIZATION, MEMORIZATION_COLUMNS)


def read_samples(folder: Path):
    """The unit's SyntheticSet, every listed image present."""
    from sonosynth.data.manifest import MANIFEST_FILENAME, Manifest

    path = folder / SAMPLES_DIR / MANIFEST_FILENAME
    if not path.is_file():
        raise DamagedOutput(path, "missing")
    try:
        manifest = Manifest.read(path)
    except (SonosynthError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedOutput(path, str(exc).strip()) from exc
    absent = [p for p in manifest.absolute_paths() if not p.is_file()]
    if absent:
        raise DamagedOutput(path, f"{len(absent)} listed image(s) are missing, e.g. {absent[0].name}")
    return manifest


def _check_fit(folder: Path) -> None:
    model = folder / MODEL_DIR
    if not model.is_dir() or not any(model.iterdir()):
        raise DamagedOutput(model, "the checkpoint folder is missing or empty")


def _check_classify(folder: Path) -> None:
    read_metrics(folder)
    read_confusion(folder)
    if not (folder / CLASSIFY_MODEL).is_file():
        raise DamagedOutput(folder / CLASSIFY_MODEL, "missing")


def _check_features(folder: Path) -> None:
    from sonosynth.hashing import file_sha1

    record_path = folder / FEATURES_RECORD
    record = read_json_with_keys(record_path, FEATURES_RECORD_KEYS)
    model = folder / FEATURES_MODEL
    if not model.is_file():
        raise DamagedOutput(model, "missing")
    # The quality rows name the network by this hash: a replaced checkpoint must not pass for the trained one.
    if file_sha1(model) != record["sha1"]:
        raise DamagedOutput(model, f"its sha1 differs from the {FEATURES_RECORD} record (the file was changed)")


def _check_quality(folder: Path) -> None:
    read_quality(folder)
    read_memorization(folder)


CHECKS: dict[str, Callable[[Path], object]] = {
    "fit": _check_fit,
    "sample": read_samples,
    "classify": _check_classify,
    "features": _check_features,
    "quality": _check_quality,
}


def check(kind: str, folder: Path) -> None:
    """Raise DamagedOutput when the finished unit in `folder` lacks a readable output."""
    CHECKS[kind](folder)
