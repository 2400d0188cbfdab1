import logging
import shutil

import pandas as pd
import pytest
from tests.experiment.conftest import SMOKE, recorded_fits, smoke_spec

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.experiment.runner import StudyRunner
from sonosynth.experiment.spec import load_spec


def test_spec_errors_name_the_bad_key(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\ndata: {phantom: {}}\nsplit: {folds: 3, fold_count: 2}\n")
    with pytest.raises(SonosynthError, match="split.fold_count"):
        load_spec(path)
    path.write_text("name: x\ndata: {phantom: {}}\nregimes: [real, real+magic]\n")
    with pytest.raises(SonosynthError, match="real\\+magic"):
        load_spec(path)
    path.write_text("name: x\ndata: {phantom: {}, manifest: m.csv}\n")
    with pytest.raises(SonosynthError, match="exactly one of"):
        load_spec(path)


def test_a_typo_in_generator_overrides_fails_before_anything_runs(tmp_path):
    generators = [SMOKE["generators"][0], {**SMOKE["generators"][1], "overrides": {"nois": 0.0}}]
    with pytest.raises(SonosynthError, match=r"generators\[1\]\.overrides\.nois"):
        StudyRunner(smoke_spec(generators=generators), tmp_path / "run", progress=False)
    classifiers = [{"model": "small_cnn", "preset": "smoke", "overrides": {"epochz": 3}}]
    with pytest.raises(SonosynthError, match=r"classifiers\[0\]\.overrides\.epochz"):
        StudyRunner(smoke_spec(classifiers=classifiers), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing ingested, nothing fitted
    assert recorded_fits() == []


def test_smoke_study_runs_the_whole_grid_and_reports(smoke_study):
    results = smoke_study.result.results
    # 3 folds x 2 fractions x 3 conditions x 3 classes
    assert len(results) == 3 * 2 * 3 * 3
    assert set(results["condition"]) == {"real", "real+synthetic [Copy]", "real+synthetic [Copier]"}
    html = smoke_study.report.html_path.read_text()
    for heading in ("Per-class results", "Accuracy per classifier", "Paired comparison", "Balanced accuracy vs",
                    "Confusion matrices", "Real and synthetic samples", "Exact spec"):
        assert heading in html
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[1].split("Exact spec")[0]


def test_synthetic_images_of_a_fold_come_only_from_its_training_patients(smoke_study):
    run = smoke_study.run_dir
    manifest = Manifest.read(run / "manifest.csv")
    folds = pd.read_csv(run / "folds.csv", dtype={"patient_id": str})
    patient_of = dict(zip(manifest.absolute_paths(), manifest.table["patient_id"], strict=True))
    fold_of = dict(zip(folds["patient_id"], folds["fold"], strict=True))
    assert smoke_study.result.synthetic_sets
    for (fold, keep, _), synthetic in smoke_study.result.synthetic_sets.items():
        parents = {p.resolve() for row in synthetic.parent_paths() for p in row}
        parent_patients = {patient_of[p] for p in {q for q in patient_of if q.resolve() in parents}}
        assert parent_patients and all(fold_of[p] != fold for p in parent_patients)
        assert set(synthetic.table["origin"]) == {"synthetic"}


def test_an_interrupted_study_resumes_without_recomputing_finished_units(smoke_study, tmp_path):
    class Stop(Exception):
        pass

    def interrupt_after_five_computed(description, computed):
        if interrupted.executor.stats.computed == 5:
            raise Stop

    interrupted = StudyRunner(smoke_spec(), tmp_path / "run", progress=False, on_unit=interrupt_after_five_computed)
    with pytest.raises(Stop):
        interrupted.run()
    resumed = StudyRunner(smoke_spec(), tmp_path / "run", progress=False).run()
    full = smoke_study.result
    assert full.computed == len(smoke_study.plan) > 5
    assert resumed.computed == full.computed - 5
    pd.testing.assert_frame_equal(resumed.results, full.results)
    # Extending the spec (a second seed) recomputes only the new classifier runs: 3 folds x 2 keeps x 3 conditions.
    extended = StudyRunner(smoke_spec(seeds=[0, 1]), tmp_path / "run", progress=False).run()
    assert extended.computed == 3 * 2 * 3


def test_the_progress_plan_matches_the_units_reported(smoke_study):
    assert smoke_study.planned == [len(smoke_study.plan)]
    assert len(smoke_study.reported) == len(smoke_study.plan)
    assert all(computed for _, computed in smoke_study.reported)  # a fresh run folder computes every unit
    assert {description.split()[0] for description, _ in smoke_study.reported} == {"fit", "sample", "classify",
                                                                                   "features", "quality"}


def test_nested_fractions_reuse_the_generator_models(smoke_study):
    trained = smoke_study.fits
    fit_units = smoke_study.plan.of_kind("fit")
    assert trained and len(trained) == len(fit_units)
    assert len(trained) == len(set(trained))  # a model on the same images and config is never trained twice
    # The half-fraction cells need models on images the full-fraction cells train on too: those are shared.
    uses = sum(len(keys) for keys in smoke_study.plan.synthetic_sets.values())
    assert uses > len(smoke_study.plan.of_kind("sample"))


def test_parallel_jobs_give_the_same_results_as_serial(tmp_path):
    spec = smoke_spec(generators=[], regimes=["real", "real+regular"], split={"folds": 3, "keep": [1.0]},
                      quality={"enabled": False})
    serial = StudyRunner(spec, tmp_path / "serial", progress=False).run()
    parallel = StudyRunner(spec, tmp_path / "parallel", progress=False, jobs=2).run()
    assert parallel.computed == serial.computed == 6
    pd.testing.assert_frame_equal(serial.results, parallel.results)


def test_quality_metrics_flag_a_generator_that_copies_its_training_images(smoke_study):
    quality = smoke_study.result.quality
    assert set(quality["generator"]) == {"Copy", "Copier"} and len(quality) == 3 * 2 * 2
    copier = quality[quality["generator"] == "Copier"]
    assert (copier["copy_rate"] == 1.0).all()
    assert copier["ssim"].min() > 0.99
    # The reader's real side: validation patients and unused training patients, never a copied one
    # (at the full fraction; a halved fold may leave the reader too few images to run).
    full = quality[quality["keep"] == 1.0]
    assert (full["reader_real_images"] > 0).all() and full["reader_auc"].between(0, 1).all()
    assert quality["features_sha1"].notna().all()
    flags = pd.read_csv(smoke_study.run_dir / "memorization_flags.csv")
    assert (flags["generator"] == "Copier").sum() == copier["images"].sum()
    html = smoke_study.report.html_path.read_text()
    # No absolute path of the run folder: a copied run folder holds the same quality.csv.
    assert str(smoke_study.run_dir) not in (smoke_study.run_dir / "quality.csv").read_text()
    assert "Memorization flags" in html and "Image quality (Table 2 style" in html


def test_generators_never_learn_from_the_early_stopping_patients(smoke_study):
    from sonosynth.data.split import split_fold
    from sonosynth.experiment.plan import resolve_study, stopping_side

    manifest = Manifest.read(smoke_study.run_dir / "manifest.csv")
    folds = pd.read_csv(smoke_study.run_dir / "folds.csv", dtype={"patient_id": str})
    study = resolve_study(smoke_spec())
    for (fold, keep, _), synthetic in smoke_study.result.synthetic_sets.items():
        stop = stopping_side(study, split_fold(manifest, folds, fold, keep).train)
        held = {p.resolve() for p in stop.absolute_paths()}
        parents = {p.resolve() for row in synthetic.parent_paths() for p in row}
        assert parents and not parents & held


# ------------------------------------------------------------------------------ cache integrity
def _copy_of(smoke_study, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_study.run_dir, run)
    return run


def _unit_folder(run, plan, kind, index=0):
    return plan.of_kind(kind)[index].folder(run / "cache")


@pytest.mark.parametrize(("kind", "file", "damage"), [
    ("classify", "metrics.json", lambda text: text[: len(text) // 2]),
    ("classify", "metrics.json", lambda text: text.replace('"balanced_accuracy"', '"balanced"')),
    ("classify", "confusion.csv", lambda text: 'a,"b\n1,2,3,4\n'),
    ("quality", "quality.csv", lambda text: '"unterminated\n' + text),
    ("features", "domain.json", lambda text: text.replace('"sha1"', '"sha"')),
    ("sample", "samples/manifest.csv", lambda text: text.replace("path,", "pth,")),
])
def test_a_damaged_cached_unit_is_named_and_recomputed(smoke_study, tmp_path, caplog, kind, file, damage):
    run = _copy_of(smoke_study, tmp_path)
    target = _unit_folder(run, smoke_study.plan, kind) / file
    target.write_text(damage(target.read_text()))
    with caplog.at_level(logging.WARNING, logger="sonosynth.experiment.cache"):
        result = StudyRunner(smoke_spec(), run, progress=False).run()
    assert result.computed == 1 and result.cache_hits == len(smoke_study.plan) - 1
    warning = "\n".join(r.getMessage() for r in caplog.records)
    assert str(target) in warning and "recomputing" in warning
    assert smoke_study.plan.of_kind(kind)[0].description in warning
    pd.testing.assert_frame_equal(result.results, smoke_study.result.results)
    # All of quality.csv, the feature-space description too: it names the feature network relative to
    # the unit, so a unit recomputed in a copy of the run writes the same table; a retrained domain
    # network (seeded, on the same images) is the same file, so the rows' features_sha1 still holds.
    pd.testing.assert_frame_equal(result.quality, smoke_study.result.quality)


def test_a_deleted_sample_image_recomputes_its_unit(smoke_study, tmp_path):
    run = _copy_of(smoke_study, tmp_path)
    samples = _unit_folder(run, smoke_study.plan, "sample") / "samples"
    next(samples.rglob("*.png")).unlink()
    result = StudyRunner(smoke_spec(), run, progress=False).run()
    assert result.computed == 1
    pd.testing.assert_frame_equal(result.results, smoke_study.result.results)


# ------------------------------------------------------------------------------ cache keys
def _classifier_only(preset):
    return smoke_spec(generators=[], regimes=["real"], split={"folds": 3, "keep": [1.0]}, quality={"enabled": False},
                      classifiers=[{"model": "small_cnn", "preset": str(preset)}])


def test_editing_a_classifier_preset_file_recomputes_its_units(tmp_path):
    import yaml

    from sonosynth.config import preset_values

    preset = tmp_path / "classifier.yaml"
    values = {**preset_values("classifier", "smoke"), "epochs": 1}
    preset.write_text(yaml.safe_dump(values))
    first = StudyRunner(_classifier_only(preset), tmp_path / "run", progress=False).run()
    assert first.computed == 3
    again = StudyRunner(_classifier_only(preset), tmp_path / "run", progress=False).run()
    assert again.computed == 0
    preset.write_text(yaml.safe_dump({**values, "learning_rate": values["learning_rate"] / 2}))
    edited = StudyRunner(_classifier_only(preset), tmp_path / "run", progress=False).run()
    assert edited.computed == 3


def test_editing_the_shipped_classifier_preset_recomputes_its_units(tmp_path, monkeypatch):
    from sonosynth import config

    shipped = config._presets
    first = StudyRunner(_classifier_only("smoke"), tmp_path / "run", progress=False).run()
    assert first.computed == 3

    def edited(component):
        presets = shipped(component)
        if component == "classifier":
            presets = {**presets, "smoke": {**presets["smoke"], "weight_decay": 1e-4}}
        return presets

    monkeypatch.setattr(config, "_presets", edited)
    again = StudyRunner(_classifier_only("smoke"), tmp_path / "run", progress=False).run()
    assert again.computed == 3
