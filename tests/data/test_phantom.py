"""Tests for the synthetic lung-ultrasound phantom."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sonosynth.data.phantom import (
    CLASSES,
    PhantomFrame,
    build_scene,
    patient_seed_sequence,
    simulate_dataset,
    simulate_patient,
)

SIZE = 64


def sector_correlation(a: np.ndarray, b: np.ndarray) -> float:
    # Restrict to pixels inside both fans: the shared black background would inflate any correlation.
    inside = (a > 0) & (b > 0)
    return float(np.corrcoef(a[inside].astype(float), b[inside].astype(float))[0, 1])


def lower_half_profiles(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lower = image[image.shape[0] // 2 :].astype(float)
    inside = lower > 0
    rows = (lower * inside).sum(axis=1) / np.maximum(inside.sum(axis=1), 1)
    cols = (lower * inside).sum(axis=0) / np.maximum(inside.sum(axis=0), 1)
    return rows, cols[4:-4]  # the outermost columns are mostly black fan edge


def profile_features(image: np.ndarray) -> np.ndarray:
    """Position-free summaries: A-lines make the row profile ripple, B-lines the column profile."""
    rows, cols = lower_half_profiles(image)
    return np.array(
        [
            rows.mean(),
            rows.std(),
            cols.std(),
            np.abs(np.diff(rows)).mean(),
            np.abs(np.diff(cols)).mean(),
            np.sort(cols)[-3:].mean() - np.median(cols),
        ]
    )


@pytest.fixture(scope="module")
def dataset() -> list[PhantomFrame]:
    return list(simulate_dataset({label: 12 for label in CLASSES}, n_frames=3, size=SIZE, seed=11))


def test_same_seed_gives_identical_frames() -> None:
    first = simulate_patient("covid", 2, 3, SIZE, seed=7)
    second = simulate_patient("covid", 2, 3, SIZE, seed=7)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)


def test_different_seed_gives_different_frames() -> None:
    a = simulate_patient("healthy", 0, 1, SIZE, seed=1)[0].image
    b = simulate_patient("healthy", 0, 1, SIZE, seed=2)[0].image
    assert not np.array_equal(a, b)


def test_adding_patients_to_one_class_leaves_the_others_unchanged() -> None:
    small = [f for f in simulate_dataset({"covid": 1, "healthy": 2}, n_frames=1, size=SIZE, seed=3)]
    large = [f for f in simulate_dataset({"covid": 4, "healthy": 2}, n_frames=1, size=SIZE, seed=3)]
    small_healthy = [f.image for f in small if f.label == "healthy"]
    large_healthy = [f.image for f in large if f.label == "healthy"]
    assert len(small_healthy) == len(large_healthy) == 2
    for a, b in zip(small_healthy, large_healthy, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [32, 64, 97])
def test_frame_shape_dtype_and_metadata(size: int) -> None:
    frames = simulate_patient("pneumonia", 3, 2, size, seed=0)
    assert [f.frame_index for f in frames] == [0, 1]
    for frame in frames:
        assert frame.label == "pneumonia"
        assert frame.patient_id == "phantom-pneumonia-003"
        assert frame.image.shape == (size, size)
        assert frame.image.dtype == np.uint8


def test_fan_is_black_outside_and_textured_inside() -> None:
    image = simulate_patient("healthy", 0, 1, SIZE, seed=0)[0].image
    corner = SIZE // 8
    assert image[:corner, :corner].max() == 0
    assert image[:corner, -corner:].max() == 0
    centre = image[SIZE // 4 : 3 * SIZE // 4, SIZE // 3 : 2 * SIZE // 3]
    assert centre.mean() > 20
    assert centre.std() > 10  # speckle, not a flat fill


def test_dataset_counts_and_labels(dataset: list[PhantomFrame]) -> None:
    for label in CLASSES:
        ids = {f.patient_id for f in dataset if f.label == label}
        assert ids == {f"phantom-{label}-{i:03d}" for i in range(12)}
    assert len(dataset) == 12 * 3 * len(CLASSES)


def test_frames_of_a_patient_vary_but_correlate_more_than_across_patients(dataset: list[PhantomFrame]) -> None:
    by_patient: dict[str, list[np.ndarray]] = {}
    for frame in dataset:
        by_patient.setdefault(frame.patient_id, []).append(frame.image)
    patients = list(by_patient)
    within = [sector_correlation(by_patient[p][0], by_patient[p][1]) for p in patients]
    between = [sector_correlation(by_patient[a][0], by_patient[b][0]) for a, b in itertools.pairwise(patients)]
    assert all(not np.array_equal(by_patient[p][0], by_patient[p][1]) for p in patients)
    assert max(within) < 0.995
    assert min(within) > 0.6
    assert np.mean(within) > np.mean(between) + 0.25


def test_classes_are_learnable_across_patients(dataset: list[PhantomFrame]) -> None:
    features = np.array([profile_features(f.image) for f in dataset])
    labels = np.array([f.label for f in dataset])
    patient_number = np.array([int(f.patient_id.rsplit("-", 1)[1]) for f in dataset])
    train = patient_number < 7  # patient-level split: no test patient is seen in training
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features[train], labels[train])
    accuracy = model.score(features[~train], labels[~train])
    assert accuracy > 0.6  # well above chance (1/3), though the classes now overlap (next test)


def test_classes_overlap_as_real_ones_do() -> None:
    def scenes(label: str) -> list:
        return [build_scene(label, np.random.default_rng(patient_seed_sequence(4, label, i).spawn(2)[0]), 32)
                for i in range(40)]

    healthy, pneumonia, covid = scenes("healthy"), scenes("pneumonia"), scenes("covid")
    healthy_with_blines = np.mean([s.blines.centers.size > 0 for s in healthy])
    assert 0.1 < healthy_with_blines < 0.6  # some healthy lungs show a B-line or two, most none
    assert max(s.blines.strengths.max(initial=0) for s in healthy) < min(s.blines.strengths.max() for s in covid) * 2
    widths = [s.consolidation_width for s in pneumonia]
    assert min(widths) > 0 and max(widths) > 2.5 * min(widths)  # mild pneumonias have small consolidations
    assert 0.05 < np.mean([s.consolidation_width > 0 for s in covid]) < 0.5
    assert all(s.consolidation_width == 0 for s in healthy)
    assert np.ptp([s.imaging.gain_db for s in healthy + pneumonia + covid]) > 10


def test_unknown_label_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="influenza") as info:
        simulate_patient("influenza", 0, 1, SIZE, seed=0)
    assert all(label in str(info.value) for label in CLASSES)
    with pytest.raises(ValueError, match="influenza"):
        simulate_dataset({"covid": 1, "influenza": 1}, n_frames=1, size=SIZE)


@pytest.mark.parametrize(
    ("n_frames", "size"),
    [(0, 64), (-1, 64), (1, 31), (1, 0)],
)
def test_bad_sizes_and_frame_counts_are_rejected(n_frames: int, size: int) -> None:
    with pytest.raises(ValueError):
        simulate_patient("healthy", 0, n_frames, size, seed=0)
    with pytest.raises(ValueError):
        simulate_dataset({"healthy": 1}, n_frames=n_frames, size=size)


@pytest.mark.parametrize("kwargs", [{"patient_index": -1}, {"seed": -5}])
def test_negative_indices_and_seeds_are_rejected(kwargs: dict[str, int]) -> None:
    arguments = {"label": "covid", "patient_index": 0, "n_frames": 1, "size": SIZE, "seed": 0} | kwargs
    with pytest.raises(ValueError):
        simulate_patient(**arguments)
