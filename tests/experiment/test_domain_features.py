"""`quality.features: domain`: one feature network per study, trained on all its real images, read by every quality unit."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.experiment.conftest import SMOKE, smoke_spec

from sonosynth.errors import SonosynthError
from sonosynth.experiment.dry_run import dry_run
from sonosynth.experiment.plan import resolve_study
from sonosynth.experiment.spec import QualitySpec, StudySpec
from sonosynth.hashing import file_sha1

# No plain `real` regime: a per-fold real-only reference classifier would then be an extra classify unit, not one
# the regimes plan anyway, so a plan that wrongly added it shows.
SYNTHETIC_ONLY = {"regimes": ["real+synthetic"], "baseline": "real+synthetic"}


def _plan(tmp_path, features: str, split: dict):
    quality = {**SMOKE["quality"], "features": features}
    if features != "domain":
        quality.pop("domain_preset")
    return dry_run(smoke_spec(split=split, quality=quality, **SYNTHETIC_ONLY), tmp_path / "run")


# ------------------------------------------------------------------------------------------ the plan
@pytest.mark.parametrize("split", [
    {"folds": 3, "minority": "pneumonia", "keep": [0.5, 1.0]},
    {"folds": 3, "minority": "pneumonia", "keep": [1.0], "run_folds": [1]},
], ids=["3 folds x 2 keeps", "1 fold x 1 keep"])
def test_the_plan_has_one_features_unit_that_every_quality_unit_reads(tmp_path, split):
    result = _plan(tmp_path, "domain", split)
    plan = result.plan
    (features,) = plan.of_kind("features")
    assert result.summary.units["features"] == 1
    cells = len(result.summary.folds) * len(result.summary.keeps)
    assert len(plan.quality_runs) == cells * len(SMOKE["generators"]) == len(plan.of_kind("quality"))
    for unit in plan.of_kind("quality"):
        assert features.key in unit.depends_on
        assert unit.args[5].kind == "features" and unit.args[5].key == features.key
        assert not any(plan.unit(key).kind == "classify" for key in unit.depends_on)
    # No reference classifier: the only classify units are the study's own runs.
    assert {u.key for u in plan.of_kind("classify")} == {run.key for run in plan.classifier_runs}
    # Trained on every real image of the study, every patient, whatever the fold.
    real = result.manifest.where(result.manifest.table["origin"] == "real")
    assert len(features.args[1]) == len(real) == len(result.manifest)
    assert set(features.args[1].table["patient_id"]) == set(result.manifest.table["patient_id"])
    keys = [u.key for u in plan]
    assert keys.index(features.key) < min(keys.index(u.key) for u in plan.of_kind("quality"))


def test_the_classifier_feature_space_still_reads_each_folds_real_only_classifier(tmp_path):
    result = _plan(tmp_path, "classifier", {"folds": 3, "minority": "pneumonia", "keep": [0.5, 1.0]})
    plan = result.plan
    assert not plan.of_kind("features") and result.summary.units["features"] == 0
    references = {u.key for u in plan.of_kind("classify")} - {run.key for run in plan.classifier_runs}
    assert len(references) == 3 * 2  # one per fold and keep
    assert all(plan.unit(key).payload["regime"] == "real" for key in references)
    for unit in plan.of_kind("quality"):
        (reference,) = set(unit.depends_on) & references
        assert unit.args[5].kind == "classify" and unit.args[5].key == reference


@pytest.mark.parametrize("features", ["random_cnn", "inception"])
def test_fixed_feature_spaces_need_no_network_unit(tmp_path, features):
    plan = _plan(tmp_path, features, {"folds": 3, "minority": "pneumonia", "keep": [1.0]}).plan
    assert not plan.of_kind("features")
    assert {u.key for u in plan.of_kind("classify")} == {run.key for run in plan.classifier_runs}
    assert all(u.args[5] is None for u in plan.of_kind("quality"))


def test_no_synthetic_set_means_no_features_unit(tmp_path):
    plan = dry_run(smoke_spec(generators=[], regimes=["real"], split={"folds": 3, "keep": [1.0]}),
                   tmp_path / "run").plan
    assert not plan.of_kind("features") and not plan.of_kind("quality")


def test_the_domain_settings_are_in_the_features_key_and_not_in_other_quality_keys(tmp_path):
    split = {"folds": 3, "minority": "pneumonia", "keep": [1.0]}
    base = _plan(tmp_path / "a", "domain", split).plan
    quality = {**SMOKE["quality"], "domain_overrides": {"epochs": 2}}
    changed = dry_run(smoke_spec(split=split, quality=quality, **SYNTHETIC_ONLY), tmp_path / "b" / "run").plan
    assert base.of_kind("features")[0].key != changed.of_kind("features")[0].key
    assert changed.of_kind("features")[0].payload["config"]["epochs"] == 2
    # Quality units follow the new network through its key.
    assert {u.key for u in base.of_kind("quality")}.isdisjoint(u.key for u in changed.of_kind("quality"))
    # A study on random_cnn has no domain settings in its quality keys (its caches predate them).
    fixed = _plan(tmp_path / "c", "random_cnn", split).plan
    assert all("domain_preset" not in u.payload["quality"] for u in fixed.of_kind("quality"))


# ----------------------------------------------------------------------------------- spec validation
def test_domain_is_the_default_feature_space():
    assert QualitySpec().features == "domain"
    assert StudySpec.model_validate({"name": "x", "data": {"phantom": {}}}).quality.features == "domain"


def test_an_unknown_feature_space_is_named():
    with pytest.raises(ValueError, match=r"features[\s\S]*'domain', 'classifier', 'random_cnn' or 'inception'"):
        QualitySpec(features="domian")
    for name in ("domain", "classifier", "random_cnn", "inception"):
        assert QualitySpec(features=name).features == name


def test_domain_settings_without_the_domain_space_are_an_error():
    with pytest.raises(ValueError, match="domain_preset / domain_overrides.*features=classifier"):
        QualitySpec(features="classifier", domain_overrides={"epochs": 2})
    with pytest.raises(ValueError, match="features=random_cnn"):
        QualitySpec(features="random_cnn", domain_preset="smoke")
    # A run's spec.yaml lists every field with its default: it loads again.
    dumped = QualitySpec(features="classifier").model_dump(mode="json")
    assert QualitySpec.model_validate(dumped).domain_preset == "cpu"


def test_a_bad_domain_override_or_preset_is_named_before_anything_runs(tmp_path):
    quality = {**SMOKE["quality"], "domain_overrides": {"epochz": 2}}
    with pytest.raises(SonosynthError, match=r"quality\.domain_overrides\.epochz"):
        resolve_study(smoke_spec(quality=quality))
    with pytest.raises(SonosynthError, match=r"quality\.domain_preset"):
        resolve_study(smoke_spec(quality={**SMOKE["quality"], "domain_preset": "no-such-preset"}))
    with pytest.raises(SonosynthError, match=r"quality\.domain_overrides\.stop_fraction"):
        resolve_study(smoke_spec(quality={**SMOKE["quality"], "domain_overrides": {"stop_fraction": 0}}))
    study = resolve_study(smoke_spec(quality={**SMOKE["quality"], "domain_overrides": {"epochs": 2}}))
    assert study.domain.epochs == 2 and study.domain.image_size == 32  # the smoke preset, then the override
    assert resolve_study(smoke_spec(quality={"features": "classifier"})).domain is None


# ------------------------------------------------------------------------------- the finished study
def _features_folder(smoke_study):
    (unit,) = smoke_study.plan.of_kind("features")
    return unit.folder(smoke_study.run_dir / "cache")


def test_every_quality_row_is_in_the_one_domain_space(smoke_study):
    quality = smoke_study.result.quality
    assert set(quality["fold"]) == {0, 1, 2} and set(quality["keep"]) == {0.5, 1.0}
    checkpoint = _features_folder(smoke_study) / "model.pt"
    assert quality["features_sha1"].nunique() == 1
    assert quality["features_sha1"].iloc[0] == file_sha1(checkpoint)[:12]
    assert quality["features"].str.startswith("domain network small_cnn").all()
    # The per-fold SIFID/FID differ (other samples, other real images), the space does not.
    assert quality.groupby("fold")["features_sha1"].first().nunique() == 1
    html = smoke_study.report.html_path.read_text()
    assert "trained once on every real image of the study" in html and quality["features_sha1"].iloc[0] in html


def test_the_domain_network_saw_every_real_patient_and_stopped_on_held_out_ones(smoke_study):
    from sonosynth.data.manifest import Manifest

    manifest = Manifest.read(smoke_study.run_dir / "manifest.csv")
    record = json.loads((_features_folder(smoke_study) / "domain.json").read_text())
    assert record["classes"] == sorted(manifest.classes)
    assert record["images"] == len(manifest)
    assert record["patients"] == manifest.table["patient_id"].nunique()
    assert 0 < len(record["stop_patients"]) < record["patients"]
    assert record["sha1"] == file_sha1(_features_folder(smoke_study) / "model.pt")
    losses = pd.read_csv(_features_folder(smoke_study) / "losses.csv")
    assert losses["stop_loss"].notna().all() and 1 <= record["best_epoch"] <= len(losses)


def test_the_feature_extractor_reads_the_domain_checkpoint(smoke_study):
    import torch

    from sonosynth.classify.features import feature_extractor

    checkpoint = _features_folder(smoke_study) / "model.pt"
    extractor = feature_extractor(f"classifier:{checkpoint}")
    images = torch.rand(2, 1, 48, 48)
    assert extractor.pooled(images).shape[0] == 2 and extractor.spatial(images).ndim == 4
    assert extractor.fingerprint == file_sha1(checkpoint)[:12]


def test_status_and_units_index_list_the_features_unit(smoke_study):
    from sonosynth.status import read_status

    units = pd.read_csv(smoke_study.run_dir / "units.csv")
    features = units[units["kind"] == "features"]
    assert features["folder"].nunique() == 1
    assert len(features) == 3 * 2  # listed at each fold and keep it serves
    status = read_status(smoke_study.run_dir).units.set_index("kind")
    assert status.loc["features", "finished"] == 1 and status.loc["features", "unfinished"] == 0
