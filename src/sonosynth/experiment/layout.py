"""The run folder's layout: every file name and table column that the runner writes and the report reads.

    runs/<name>/
      spec.yaml  versions.json  manifest.csv  folds.csv   the study's inputs, as resolved
      data/                                                ingested or simulated real images
      cache/<kind>/<key>/                                  one folder per unit of work (see `cache.py`)
      results.csv  confusions.csv  quality.csv  memorization_flags.csv  synthetic_sets.csv
      synthetic/fold<F>-keep<K>-<generator>/manifest.csv   each fold's SyntheticSet per generator
      report.md  report.html  figures/
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SPEC = "spec.yaml"
VERSIONS = "versions.json"
MANIFEST = "manifest.csv"
FOLDS = "folds.csv"
DATA_DIR = "data"
CACHE_DIR = "cache"
RESULTS = "results.csv"
CONFUSIONS = "confusions.csv"
QUALITY = "quality.csv"
MEMORIZATION = "memorization_flags.csv"
SYNTHETIC_INDEX = "synthetic_sets.csv"
SYNTHETIC_DIR = "synthetic"
UNITS = "units.csv"  # every unit at each place of the study it serves, with its cache folder
REPORT_MARKDOWN = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
READER_STUDY_DIR = "reader-study"

# One row per fold x keep x condition x classifier x seed x class.
RESULT_COLUMNS = ("fold", "keep", "regime", "generator", "condition", "classifier", "seed", "accuracy",
                  "balanced_accuracy", "class", "precision", "recall", "f1", "support")
CONFUSION_COLUMNS = ("fold", "keep", "condition", "classifier", "seed", "true", "predicted", "count")
SYNTHETIC_INDEX_COLUMNS = ("fold", "keep", "generator", "manifest")
UNITS_COLUMNS = ("kind", "fold", "keep", "name", "classifier", "seed", "description", "folder")


def synthetic_set_name(fold: int, keep: float, generator: str) -> str:
    return f"fold{fold}-keep{keep:g}-{generator}"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> RunFolder:
        return cls(Path(root))

    @property
    def spec(self) -> Path:
        return self.root / SPEC

    @property
    def versions(self) -> Path:
        return self.root / VERSIONS

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def folds(self) -> Path:
        return self.root / FOLDS

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def confusions(self) -> Path:
        return self.root / CONFUSIONS

    @property
    def quality(self) -> Path:
        return self.root / QUALITY

    @property
    def memorization(self) -> Path:
        return self.root / MEMORIZATION

    @property
    def synthetic_index(self) -> Path:
        return self.root / SYNTHETIC_INDEX

    @property
    def units(self) -> Path:
        return self.root / UNITS

    @property
    def report_markdown(self) -> Path:
        return self.root / REPORT_MARKDOWN

    @property
    def report_html(self) -> Path:
        return self.root / REPORT_HTML

    @property
    def figures(self) -> Path:
        return self.root / FIGURES_DIR

    @property
    def reader_study(self) -> Path:
        return self.root / READER_STUDY_DIR

    def synthetic_manifest(self, fold: int, keep: float, generator: str) -> Path:
        """Where a fold's SyntheticSet is written; the index stores this path relative to the run folder."""
        return self.root / self.synthetic_manifest_relative(fold, keep, generator)

    @staticmethod
    def synthetic_manifest_relative(fold: int, keep: float, generator: str) -> str:
        return f"{SYNTHETIC_DIR}/{synthetic_set_name(fold, keep, generator)}/{MANIFEST}"
