"""The automatic reader (classifier two-sample test): chance on two real samples, caught noise, grouped folds."""

from __future__ import annotations

import numpy as np
import pytest

from sonosynth.data.phantom import simulate_patient
from sonosynth.errors import InputDataError
from sonosynth.metrics.quality.reader import ReaderConfig, automatic_reader, held_out_folds

FAST = ReaderConfig(image_size=32, steps=150, widths=[8, 16, 32], bootstrap=300)
RAW = FAST.model_copy(update={"highpass_weight": 0.0, "gain_jitter": 0.0, "crop_min": 1.0})  # the raw-image reader


def _patients(label: str, first: int, count: int, frames: int = 4, seed: int = 5, size: int = 48):
    images, groups = [], []
    for index in range(first, first + count):
        for frame in simulate_patient(label, index, frames, size, seed):
            images.append(frame.image.astype(np.float32) / 255.0)
            groups.append(frame.patient_id)
    return images, groups


def test_two_samples_of_real_patients_are_indistinguishable():
    real, real_groups = _patients("healthy", 0, 8)
    other, other_groups = _patients("healthy", 8, 8)
    result = automatic_reader(real, real_groups, other, other_groups, FAST)
    assert result.grouped
    assert abs(result.auc - 0.5) < 0.2
    assert result.auc_lo < 0.5 < result.auc_hi


def test_noise_images_are_caught():
    real, real_groups = _patients("healthy", 0, 8)
    rng = np.random.default_rng(0)
    noise = [rng.random((48, 48), dtype=np.float32) for _ in range(32)]
    result = automatic_reader(real, real_groups, noise, [f"model-{i % 4}" for i in range(32)], FAST)
    assert result.auc > 0.95
    assert result.auc_lo > 0.8
    assert result.fake_detection > 0.9
    assert result.row()["reader_auc"] == result.auc


@pytest.mark.parametrize("folds", [2, 3])
def test_no_patient_or_model_is_on_both_sides_of_a_fold(folds):
    rng = np.random.default_rng(folds)
    real_groups = [f"patient-{g}" for g in rng.integers(0, 7, size=40)]
    synthetic_groups = [f"model-{g}" for g in rng.integers(0, 4, size=30)]
    labels = np.array([0] * 40 + [1] * 30)
    groups = real_groups + synthetic_groups
    held_out, grouped = held_out_folds(labels, groups, folds)
    assert grouped
    assert sorted(np.concatenate(held_out)) == list(range(70))
    for test in held_out:
        train = np.setdiff1d(np.arange(70), test)
        assert not {groups[i] for i in test} & {groups[i] for i in train}
        assert set(labels[test]) == {0, 1}


def test_a_side_with_too_few_groups_is_split_per_image_and_says_so():
    labels = np.array([0] * 10 + [1] * 10)
    groups = [f"p{i % 5}" for i in range(10)] + ["the-only-model"] * 10
    held_out, grouped = held_out_folds(labels, groups, 2)
    assert not grouped
    for test in held_out:  # patients are still never split
        train = np.setdiff1d(np.arange(20), test)
        assert not {groups[i] for i in test if i < 10} & {groups[i] for i in train if i < 10}


def test_too_few_images_is_a_clear_error():
    with pytest.raises(InputDataError, match="at least"):
        automatic_reader([np.zeros((8, 8))] * 2, ["a", "b"], [np.ones((8, 8))] * 10, ["m"] * 10, FAST)


def _half_resolution(image: np.ndarray) -> np.ndarray:
    from sonosynth.metrics.quality.images import resize

    return resize(resize(image, (image.shape[0] // 2, image.shape[1] // 2)), image.shape)


def test_a_strided_full_size_reader_catches_half_resolution_fakes_and_keeps_chance_on_real_ones():
    """SinGAN at 64 px beside 128 px frames, in small: fakes are real patients' frames at half resolution.

    Read at full size through a stride-2 stem (the cost of a half-size reader), the missing fine speckle
    gives them away better than at half size; two real samples stay indistinguishable. Compared on the
    raw-image reader: the residual channel alone already catches these fakes at half size.
    """
    real, real_groups = _patients("healthy", 0, 8, size=64)
    other, other_groups = _patients("healthy", 8, 8, size=64)
    blurred = [_half_resolution(image) for image in other]
    strided = RAW.model_copy(update={"image_size": 64, "stem_stride": 2})
    half = automatic_reader(real, real_groups, blurred, other_groups, RAW.model_copy(update={"image_size": 32}))
    full = automatic_reader(real, real_groups, blurred, other_groups, strided)
    assert full.auc > 0.95
    assert full.auc > half.auc
    for config in (strided, FAST.model_copy(update={"image_size": 64, "stem_stride": 2})):
        null = automatic_reader(real, real_groups, other, other_groups, config)
        assert null.auc_lo < 0.5 < null.auc_hi


def test_per_pixel_noise_on_real_frames_is_caught_across_patients_of_different_gain():
    """Real patients differ in gain; the fakes are other patients' frames with per-pixel noise.

    The raw-image reader learns the training patients' gain and calls unfamiliar real patients
    synthetic; the default reader (gain jitter, crops, the speckle-scale residual channel) reads the
    noise instead.
    """
    real, real_groups = _patients("healthy", 0, 8)
    gains = dict(zip(sorted(set(real_groups)), [0.5, 0.7, 1.0, 1.4] * 2, strict=True))
    real = [np.clip(image * gains[patient], 0, 1) for image, patient in zip(real, real_groups, strict=True)]
    other, other_groups = _patients("healthy", 8, 8)
    rng = np.random.default_rng(0)
    noisy = [np.clip(image + 0.1 * rng.standard_normal(image.shape), 0, 1).astype(np.float32) for image in other]
    default = automatic_reader(real, real_groups, noisy, other_groups, FAST)
    raw = automatic_reader(real, real_groups, noisy, other_groups, RAW)
    assert default.auc > 0.95
    assert default.auc_lo > 0.8
    assert raw.auc < default.auc
