"""A tiny generator used to test the runner's logic apart from the real (slow) generators."""

from __future__ import annotations

import json
from dataclasses import dataclass
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
    fits: ClassVar[list[tuple[tuple[str, ...], float]]] = []  # (training images, noise) of each fit

    def fit(self, training, out, config, *, device="auto", resume=True, progress=True):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = [str(p) for p in training.absolute_paths()]
        NoisyCopyGenerator.fits.append((tuple(paths), config.noise))
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


def recorded_fits() -> list[tuple[tuple[str, ...], float]]:
    """The fits of the registered test generator. Pytest may import this module twice (as conftest and as
    `tests.experiment.conftest`); the registry holds the class that registered last, so read it there."""
    return base.create_generator("noisy-copy").fits


def _presets_with_noisy_copy(real):
    return lambda component: {"smoke": {}, "cpu": {}} if component == "noisy-copy" else real(component)


@pytest.fixture(autouse=True)
def _noisy_copy_presets(monkeypatch):
    """The config loader looks presets up by file; give the test generator an in-memory one."""
    from sonosynth import config

    monkeypatch.setattr(config, "_presets", _presets_with_noisy_copy(config._presets))
    recorded_fits().clear()
    yield


# The smoke study most runner tests read: phantom data, a noisy copier and an exact copier (so the
# memorization audit has something to flag), the real and real+synthetic regimes, quality metrics on.
SMOKE = {
    "name": "smoke",
    "data": {"phantom": {"patients": {"covid": 4, "pneumonia": 4, "healthy": 4}, "frames": 3, "size": 48}},
    "split": {"folds": 3, "minority": "pneumonia", "keep": [0.5, 1.0]},
    "generators": [
        {"name": "Copy", "kind": "noisy-copy", "preset": "smoke", "models": "per_image", "samples_per_model": 4},
        {"name": "Copier", "kind": "noisy-copy", "preset": "smoke", "overrides": {"noise": 0.0},
         "samples_per_model": 3},
    ],
    "regimes": ["real", "real+synthetic"],
    "classifiers": [{"model": "small_cnn", "preset": "smoke"}],
    # The default feature space (one domain network for the study), trained at the smoke preset.
    "quality": {"enabled": True, "features": "domain", "domain_preset": "smoke", "preset": "smoke"},
}


def smoke_spec(**changes):
    from sonosynth.experiment.spec import StudySpec

    return StudySpec.model_validate({**SMOKE, **changes})


@dataclass
class SmokeStudy:
    """One finished run of the smoke study, shared by the tests that only read it (never write into it)."""

    run_dir: Path
    result: object  # StudyResult
    report: object  # Report
    planned: list[int]
    reported: list[tuple[str, bool]]
    fits: list[tuple[tuple[str, ...], float]]
    plan: object  # StudyPlan


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> SmokeStudy:
    from sonosynth import config
    from sonosynth.experiment.runner import StudyRunner
    from sonosynth.report.build import write_report

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(config, "_presets", _presets_with_noisy_copy(config._presets))
        recorded_fits().clear()
        planned, reported = [], []
        run_dir = tmp_path_factory.mktemp("smoke") / "run"
        runner = StudyRunner(smoke_spec(), run_dir, progress=False, on_plan=lambda total, groups: planned.append(total),
                             on_unit=lambda description, computed: reported.append((description, computed)))
        result = runner.run()
        plan = runner.plan(*runner.prepare())
        fits = list(recorded_fits())
        recorded_fits().clear()
        return SmokeStudy(run_dir, result, write_report(run_dir), planned, reported, fits, plan)


__all__ = ["SMOKE", "NoisyCopyGenerator", "SmokeStudy", "recorded_fits", "save_png", "smoke_spec"]
