"""How a generator's training images are split into models (per_image / per_fold / per_class and the caps)."""

from __future__ import annotations

import pytest

from sonosynth.data.manifest import Manifest
from sonosynth.experiment.plan import model_groups
from sonosynth.experiment.spec import GeneratorSpec


def _images(tmp_path, labels):
    rows = [{"path": f"{label}/{i}.png", "label": label, "patient_id": f"p{i}", "source": f"{label}/{i}.png"}
            for i, label in enumerate(labels)]
    return Manifest.from_rows(rows, tmp_path)


@pytest.mark.parametrize(("models", "cap", "expected"), [
    ("per_fold", None, [[0, 1, 2, 3, 4]]),
    ("per_fold", 3, [[0, 1, 2]]),                 # FewDDM on the first three of the fold's images
    ("per_class", 2, [[0, 1], [3, 4]]),
    ("per_image", 2, [[0], [1], [2], [3], [4]]),  # one image per model already
])
def test_max_images_per_model_keeps_the_first_images_of_each_model(tmp_path, models, cap, expected):
    images = _images(tmp_path, ["a", "a", "a", "b", "b"])
    spec = GeneratorSpec(name="G", kind="sinddm", models=models, max_images_per_model=cap)
    groups = model_groups(images, spec)
    paths = images.table["path"].tolist()
    assert [[paths.index(p) for p in group.table["path"]] for group in groups] == expected


def test_max_images_per_model_must_be_positive():
    with pytest.raises(ValueError, match="max_images_per_model"):
        GeneratorSpec(name="G", kind="sinddm", max_images_per_model=0)
