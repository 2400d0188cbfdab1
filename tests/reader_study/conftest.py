"""Study inputs made in the tests: phantom frames as the real images, other phantom frames as two SyntheticSets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonosynth.data.manifest import Manifest
from sonosynth.reader_study.create import StudyOptions
from tests.reader_study.study_helpers import GENERATORS, make_study, write_synthetic_set


@pytest.fixture(scope="session")
def synthetic_sets(tmp_path_factory) -> list[Manifest]:
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

    root = tmp_path_factory.mktemp("reader-synthetic")
    options = PhantomOptions(patients={"pneumonia": 4}, frames=3, size=48, seed=7)
    source, _ = make_phantom_dataset(root / "source", options, progress=False)
    return [write_synthetic_set(source, root / name, name, 6, offset=6 * i) for i, name in enumerate(GENERATORS)]


@pytest.fixture(scope="session")
def study_options() -> StudyOptions:
    return StudyOptions(per_generator=4, real_count=5, seed=0)


@pytest.fixture
def study_dir(tmp_path, phantom_manifest, synthetic_sets, study_options) -> Path:
    return make_study(phantom_manifest, synthetic_sets, tmp_path / "study", study_options)
