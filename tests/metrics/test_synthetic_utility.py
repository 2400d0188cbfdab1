import numpy as np
import pytest

from sonosynth.metrics.quality.synthetic_utility import balanced_accuracy, cas_ratio, neighbour_difference


def test_neighbour_difference_of_known_patterns():
    flat = np.full((2, 8, 8), 100, dtype=np.uint8)
    assert neighbour_difference(flat) == 0.0
    stripes = np.zeros((1, 4, 4))
    stripes[:, :, 1::2] = 255  # vertical stripes: every horizontal step is 255, every vertical step 0
    assert neighbour_difference(stripes) == pytest.approx(127.5)
    checker = (np.indices((6, 6)).sum(axis=0) % 2 * 10.0)[None]
    assert neighbour_difference(checker) == pytest.approx(10.0)


def test_neighbour_difference_of_uniform_noise_is_a_third_of_the_range():
    noise = np.random.default_rng(0).uniform(0, 255, size=(8, 64, 64))
    assert neighbour_difference(noise) == pytest.approx(85.0, rel=0.02)


def test_neighbour_difference_needs_a_batch():
    with pytest.raises(ValueError, match="batch"):
        neighbour_difference(np.zeros((8, 8)))


def test_balanced_accuracy_weighs_classes_equally():
    targets = [0, 0, 0, 0, 1]
    assert balanced_accuracy(targets, [0, 0, 0, 0, 0]) == pytest.approx(0.5)
    assert balanced_accuracy(targets, [0, 0, 0, 1, 1]) == pytest.approx((0.75 + 1.0) / 2)


def test_cas_ratio():
    assert cas_ratio(0.4, 0.8) == pytest.approx(0.5)
    assert cas_ratio(0.9, 0.6) == pytest.approx(1.5)
    assert np.isnan(cas_ratio(0.5, 0.0))
