"""A generator fit on several devices as one unit: the plan asks for the GPUs, the unit launches the ranks."""

from __future__ import annotations

import pandas as pd
import pytest
from tests.experiment.conftest import SMOKE, smoke_spec

from sonosynth.errors import SonosynthError
from sonosynth.experiment import multi_gpu
from sonosynth.experiment.plan import resolve_generator, resolve_study
from sonosynth.experiment.spec import GeneratorSpec

GUIDED = {"name": "Guided", "kind": "guided", "preset": "smoke", "models": "per_fold", "classes": "all",
          "training_images": "all", "overrides": {"image_size": 16}, "samples_per_model": 2}


def test_a_multi_gpu_generator_gets_one_unit_asking_for_its_gpus(tmp_path):
    from sonosynth.experiment.runner import StudyRunner

    spec = smoke_spec(generators=[{**GUIDED, "gpus": 2}], split={"folds": 3, "keep": [1.0], "run_folds": [0]},
                      quality={"enabled": False}, device="cuda")
    runner = StudyRunner(spec, tmp_path / "run", progress=False)
    plan = runner.plan(*runner.prepare())
    (fit,) = plan.of_kind("fit")
    assert fit.function is multi_gpu.distributed_fit_unit and fit.payload["processes"] == 2
    assert (fit.resources.gpus, fit.resources.cpus) == (2, 2)
    assert all(unit.resources.gpus == 1 for unit in plan.units if unit.kind != "fit")
    # One GPU is the ordinary fit, with the key it always had (no "processes" in it).
    single = StudyRunner(spec.model_copy(update={"generators": [GeneratorSpec.model_validate(GUIDED)]}),
                         tmp_path / "run", progress=False)
    (one,) = single.plan(*single.prepare()).of_kind("fit")
    assert "processes" not in one.payload and one.key != fit.key and one.resources.gpus == 1


def test_only_generators_that_train_distributed_may_ask_for_several_gpus():
    with pytest.raises(SonosynthError, match=r"generators\[0\]\.gpus: noisy-copy trains in one process"):
        resolve_study(smoke_spec(generators=[{**SMOKE["generators"][0], "gpus": 2}]))


def test_two_process_fit_on_the_cpu_writes_one_checkpoint(phantom_manifest, tmp_path):
    """The multi-GPU launch on the CPU: two gloo ranks train one guided model in the unit's folder."""
    from sonosynth.generators.guided.training import LOG_NAME

    generator = resolve_generator(0, GeneratorSpec.model_validate(GUIDED))
    training = phantom_manifest.where(phantom_manifest.table.groupby("label").cumcount() < 4)
    ranks = multi_gpu.launch_fit("guided", generator.config, training, "cpu", 2, tmp_path / "model")
    assert sorted(ranks.values()) == [(0, 2), (1, 2)]
    assert (tmp_path / "model" / "generator.json").is_file()
    assert len(pd.read_csv(tmp_path / "model" / LOG_NAME)) == generator.config.train.steps
