"""`sonosynth run --dry-run [--probe]`: the spec is checked before any data, the plan counted, every network probed."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from sonosynth.errors import SonosynthError
from sonosynth.experiment.dry_run import dry_run
from sonosynth.experiment.spec import StudySpec

# The real generators at their smoke presets (the probe runs their own fit and sample code).
SPEC = {
    "name": "dry",
    "data": {"phantom": {"patients": {"covid": 3, "pneumonia": 3, "healthy": 3}, "frames": 2, "size": 48}},
    "split": {"folds": 3, "minority": "pneumonia", "keep": [0.5, 1.0], "run_folds": [0]},
    "generators": [
        {"name": "SinGAN", "kind": "singan", "preset": "smoke", "samples_per_model": 2},
        {"name": "SinDDM", "kind": "sinddm", "preset": "smoke", "samples_per_model": 2},
        {"name": "Guided", "kind": "guided", "preset": "smoke", "models": "per_fold", "classes": "all",
         "training_images": "all", "samples_per_model": 2, "rounds": [1, 2]},
    ],
    "regimes": ["real", "real+synthetic", "pretrain-synthetic->finetune-real"],
    "classifiers": [{"model": "small_cnn", "preset": "smoke"}],
    "quality": {"enabled": False},
    "device": "cpu",
}


def spec(**changes) -> StudySpec:
    return StudySpec.model_validate({**SPEC, **changes})


def test_a_bad_override_is_named_before_any_data_is_touched(tmp_path):
    generators = [dict(g) for g in SPEC["generators"]]
    generators[1]["overrides"] = {"dim": 8, "no_such_field": 1}
    with pytest.raises(SonosynthError, match=r"generators\[1\]\.overrides"):
        dry_run(spec(generators=generators), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bad_classifier_option_is_named(tmp_path):
    with pytest.raises(SonosynthError, match=r"classifiers\[0\]\.options"):
        dry_run(spec(classifiers=[{"model": "small_cnn", "preset": "smoke", "options": {"wings": 2}}]), tmp_path)


def test_plan_counts_models_images_and_trainings(tmp_path):
    result = dry_run(spec(), tmp_path / "run")
    summary = result.summary
    # fold 0 at two keep fractions; the per-image generators have one model per kept pneumonia clip
    assert summary.models["Guided"] == 2
    assert summary.units["fit"] == sum(summary.models.values())
    # Guided: 2 cells x 3 classes x 2 images x 2 rounds; the 2-round arm reuses round 1's units
    assert summary.synthetic_images["Guided"] == 2 * 3 * 2 * 2
    conditions = {u.description.split(" fold")[0] for u in result.plan.of_kind("classify")}
    assert "classify real+synthetic [Guided-1round] small_cnn" in conditions
    assert "classify real+synthetic [Guided-2rounds] small_cnn" in conditions
    # 1 real + 4 arms x 2 synthetic regimes, per keep fraction; pretrain->finetune counts two stages
    assert summary.classifier_trainings["small_cnn"] == 2 * (1 + 4 * 2)
    assert summary.training_stages == 2 * (1 + 4 + 4 * 2)


def test_rounds_draw_new_images_with_their_own_seed(tmp_path):
    result = dry_run(spec(), tmp_path / "run")
    one = result.plan.synthetic_sets[(0, 1.0, "Guided-1round")]
    two = result.plan.synthetic_sets[(0, 1.0, "Guided-2rounds")]
    assert set(one) < set(two) and len(two) == 2 * len(one)
    seeds = {result.plan.unit(k).args[6] for k in two}
    assert len(seeds) == 2


def test_probe_runs_every_network_on_the_smoke_presets(tmp_path):
    from sonosynth.experiment.probe import probe_study

    table = probe_study(dry_run(spec(), tmp_path / "run"), "cpu")
    assert list(table["unit"]) == ["classify small_cnn", "fit SinGAN", "sample SinGAN", "fit SinDDM",
                                   "sample SinDDM", "fit Guided", "sample Guided"]
    fits = table[table["unit"].str.startswith(("fit", "classify"))]
    assert all(int(n.replace(",", "")) > 0 for n in fits["trainable"])
    assert table["full run (est.)"].ne("").all()
    assert table.attrs["total_seconds"] > 0
    assert table["notes"].str.contains("own process").all()  # every part measured in its own process


def test_cli_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    from sonosynth.cli import app

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "generators": SPEC["generators"][:1]}))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "generator models" in result.output and "classifier trainings" in result.output
    assert not (tmp_path / "run" / "cache").exists()


def test_split_stopping_keeps_the_studys_share_of_minority_patients(tmp_path):
    """The stopping set comes first; at fraction f the fit side still has ceil(f x n) minority patients."""
    import math

    from sonosynth.experiment.dry_run import training_sides

    changes = {"data": {"phantom": {"patients": {"covid": 6, "pneumonia": 12, "healthy": 6}, "frames": 1,
                                    "size": 32}},
               "split": {"folds": 3, "minority": "pneumonia", "keep": [0.25, 1.0], "run_folds": [0],
                         "stopping": {"fraction": 0.2, "classes": "all"}},
               "generators": [], "regimes": ["real"]}
    result = dry_run(spec(**changes), tmp_path / "run")
    folds = result.folds
    n = int(((folds["fold"] != 0) & (folds["label"] == "pneumonia")).sum())
    sides = training_sides(result).set_index(["keep", "class"])
    fit_quarter = int(sides.loc[(0.25, "pneumonia"), "fit patients / images"].split(" / ")[0])
    assert fit_quarter == math.ceil(0.25 * n)  # not a quarter of what the stopping set left
    stops = result.plan.stopping_sets
    assert set(stops[(0, 0.25)].table["patient_id"]) == set(stops[(0, 1.0)].table["patient_id"])
    assert sides.loc[(0.25, "pneumonia"), "stopping patients / images"].split(" / ")[0] != "0"


def _allocate_in_a_probe_block(megabytes: int) -> tuple[int, float, float]:
    import os

    import torch

    from sonosynth.experiment.probe import PeakMemory

    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(megabytes * 2**20 // 4)  # float32: 4 bytes each, every page touched
        del block
    return os.getpid(), memory.base_mb, memory.peak_mb


def test_each_probed_part_reads_its_own_peak_in_a_fresh_process():
    """In one long-lived process a part reuses memory an earlier part freed and reads low; isolated it does not."""
    import os

    import torch

    from sonosynth.experiment.probe import run_isolated

    _allocate_in_a_probe_block(300)  # this process now holds freed pages a second block in it could reuse
    readings = [run_isolated(torch.device("cpu"), _allocate_in_a_probe_block, 300) for _ in range(2)]
    assert all(pid != os.getpid() for pid, _, _ in readings)
    assert readings[0][0] != readings[1][0]  # a fresh process per part
    for _, base, peak in readings:
        assert peak - base >= 290, (base, peak)
