"""The demo job on the embedded phantom data, so a fresh clone shows the pipeline without real data."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonosynth.data.manifest import Manifest
from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset
from sonosynth.data.split import fold_summary, make_folds, write_folds

DEMO_KEEPS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class DemoResult:
    manifest: Manifest
    folds_path: Path
    fold_summary: pd.DataFrame
    seconds: float


def run_demo(out: str | os.PathLike, seed: int = 0, progress: bool = True) -> DemoResult:
    started = time.perf_counter()
    out = Path(out)
    manifest, _ = make_phantom_dataset(out / "data", PhantomOptions(seed=seed), progress=progress)
    folds = make_folds(manifest, n_folds=5, seed=seed, minority="pneumonia")
    folds_path = write_folds(folds, out / "folds.csv")
    summary = fold_summary(manifest, folds, DEMO_KEEPS)
    return DemoResult(manifest, folds_path, summary, time.perf_counter() - started)
