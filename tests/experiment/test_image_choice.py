"""`image_choice: typical`: capped generators learn from the images that look like the rest of their class."""

from __future__ import annotations

import numpy as np
import pytest

from sonosynth.data.images import save_png
from sonosynth.data.manifest import Manifest
from sonosynth.experiment.image_choice import atypicality, typical_first
from sonosynth.experiment.plan import model_groups
from sonosynth.experiment.spec import GeneratorSpec


def _fan(size: int = 64, gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """A bright sector on black with speckle, scaled by `gain`."""
    y, x = np.mgrid[0:size, 0:size]
    angle = np.arctan2(x - size / 2, y + size / 4)
    inside = (np.abs(angle) < 0.6) & (np.hypot(x - size / 2, y + size / 4) < size * 1.1)
    speckle = np.random.default_rng(seed).uniform(0.6, 1.0, (size, size))
    return (np.clip(inside * speckle * 200 * gain, 0, 255)).astype(np.uint8)


def _strip(size: int = 64) -> np.ndarray:
    """A linear-probe image: a bright diagonal band, nothing like the fans."""
    y, x = np.mgrid[0:size, 0:size]
    return ((np.abs(x - y) < 6) * 220).astype(np.uint8)


def _manifest(tmp_path, images: list[np.ndarray], labels: list[str] | None = None) -> Manifest:
    rows = []
    for i, image in enumerate(images):
        save_png(tmp_path / f"{i}.png", image)
        rows.append({"path": f"{i}.png", "label": (labels or ["a"] * len(images))[i], "patient_id": f"p{i}",
                     "source": f"{i}.png"})
    return Manifest.from_rows(rows, tmp_path)


def test_the_outlier_is_least_typical_and_gain_does_not_count():
    fans = [_fan(seed=s).astype(np.float32) / 255 for s in range(3)]
    dark = _fan(gain=0.15, seed=9).astype(np.float32) / 255   # same layout, nearly black
    scores = atypicality(np.stack([*fans, dark, _strip().astype(np.float32) / 255]))
    assert scores.argmax() == 4                                # the strip
    assert scores[3] < scores[4] / 2                           # the dark fan is as typical as the bright ones


def test_a_uniform_image_correlates_with_nothing():
    scores = atypicality(np.stack([np.zeros((8, 8)), np.eye(8), np.eye(8)]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.5)                     # (0 to its twin + 1 to the blank) / 2


def test_typical_first_orders_within_each_class_and_keeps_every_image(tmp_path):
    images = [_strip(), _fan(seed=1), _fan(seed=2), _strip(), _fan(seed=3), _fan(seed=4)]
    manifest = _manifest(tmp_path, images, ["a", "a", "a", "b", "b", "b"])
    ordered = typical_first(manifest)
    assert sorted(ordered.table["path"]) == sorted(manifest.table["path"])
    assert ordered.table["label"].tolist() == ["a", "a", "a", "b", "b", "b"]
    assert ordered.table["path"].tolist()[2] == "0.png" and ordered.table["path"].tolist()[5] == "3.png"


@pytest.mark.parametrize(("choice", "models", "cap", "allowed"), [
    ("first", "per_fold", {"max_images_per_model": 3}, [{"0.png", "1.png", "2.png"}]),  # manifest order
    ("typical", "per_fold", {"max_images_per_model": 3}, [{"2.png", "3.png", "4.png"}]),  # the three fans
    ("typical", "per_image", {"max_models": 2}, [{"2.png", "3.png", "4.png"}] * 2),    # two of the fans
])
def test_caps_are_filled_in_image_choice_order(tmp_path, choice, models, cap, allowed):
    images = [_strip(), _strip() // 2, _fan(seed=2), _fan(seed=3), _fan(seed=4)]
    spec = GeneratorSpec(name="G", kind="sinddm", models=models, image_choice=choice, **cap)
    groups = model_groups(_manifest(tmp_path, images), spec)
    assert len(groups) == len(allowed)
    for group, paths in zip(groups, allowed, strict=True):
        assert set(group.table["path"]) <= paths
    assert models != "per_fold" or set(groups[0].table["path"]) == allowed[0]


def test_image_choice_is_validated():
    with pytest.raises(ValueError, match="image_choice"):
        GeneratorSpec(name="G", kind="sinddm", image_choice="brightest")
