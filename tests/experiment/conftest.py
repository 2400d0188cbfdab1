"""A tiny generator used to test the runner's logic apart from the real (slow) generators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from sonosynth.config import StrictModel
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.generators import base


class NoisyCopyConfig(StrictModel):
    noise: float = 10.0


@base.register_generator("noisy-copy")
class NoisyCopyGenerator:
    """'Learns' its images by storing them; samples are noisy copies. Counts its fits for cache tests."""

    name = "noisy-copy"
    config_type = NoisyCopyConfig
    presets = "noisy-copy"
    fits: ClassVar[list[list[str]]] = []

    def fit(self, training, out, config, *, device="auto", resume=True, progress=True):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [str(p) for p in training.absolute_paths()]
        NoisyCopyGenerator.fits.append(paths)
        (out / "model.json").write_text(json.dumps({"images": paths, "labels": training.labels,
                                                    "noise": config.noise}))
        return out

    def sample(self, checkpoint, n, out, *, label=None, size=None, seed=0, device="auto", progress=True, **settings):
        model = json.loads((Path(checkpoint) / "model.json").read_text())
        writer = base.SyntheticSetWriter(out, "noisy-copy", checkpoint, model["images"], {"noise": model["noise"]},
                                         label or model["labels"][0])
        for s in writer.missing_seeds(range(seed, seed + n)):
            rng = np.random.default_rng(s)
            image = load_grayscale(model["images"][s % len(model["images"])]).astype(float)
            writer.add(s, np.clip(image + rng.normal(0, model["noise"], image.shape), 0, 255).astype(np.uint8))
        return writer.flush()


@pytest.fixture(autouse=True)
def _noisy_copy_presets(monkeypatch):
    """The config loader looks presets up by file; give the test generator an in-memory one."""
    from sonosynth import config

    real = config._presets
    monkeypatch.setattr(config, "_presets", lambda c: {"smoke": {}, "cpu": {}} if c == "noisy-copy" else real(c))
    NoisyCopyGenerator.fits.clear()
    yield


__all__ = ["NoisyCopyGenerator", "save_png"]
