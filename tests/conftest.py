"""Fixtures shared by the whole suite: the real POCUS folder (when present) and small phantom datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

POCUS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pocus"


@pytest.fixture(scope="session")
def pocus_dir() -> Path:
    """The real POCUS data; tests that need it skip when this machine does not have it."""
    if not (POCUS_DIR / "dataset_metadata.csv").is_file():
        pytest.skip(f"real POCUS data not found at {POCUS_DIR} (CI and team machines have it)")
    return POCUS_DIR


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory):
    """A small phantom dataset (4 covid, 3 pneumonia, 4 healthy patients, 3 frames, 64 px), built once."""
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

    out = tmp_path_factory.mktemp("phantom") / "data"
    options = PhantomOptions(patients={"covid": 4, "pneumonia": 3, "healthy": 4}, frames=3, size=64, seed=0)
    manifest, _ = make_phantom_dataset(out, options, progress=False)
    return manifest
