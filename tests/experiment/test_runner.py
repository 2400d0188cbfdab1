import pandas as pd
import pytest
from tests.experiment.conftest import NoisyCopyGenerator

from sonosynth.data.manifest import Manifest
from sonosynth.errors import SonosynthError
from sonosynth.experiment.runner import StudyRunner
from sonosynth.experiment.spec import StudySpec, load_spec
from sonosynth.experiment.study import run_study

SMOKE = {
    "name": "smoke",
    "data": {"phantom": {"patients": {"covid": 4, "pneumonia": 4, "healthy": 4}, "frames": 3, "size": 48}},
    "split": {"folds": 3, "minority": "pneumonia", "keep": [0.5, 1.0]},
    "generators": [{"name": "Copy", "kind": "noisy-copy", "preset": "smoke", "models": "per_image",
                    "samples_per_model": 4}],
    "regimes": ["real", "real+synthetic"],
    "classifiers": [{"model": "small_cnn", "preset": "smoke"}],
    "quality": {"enabled": False},
}


def _spec(**changes):
    return StudySpec.model_validate({**SMOKE, **changes})


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


def test_smoke_study_runs_the_whole_grid_and_reports(tmp_path):
    outcome = run_study(_spec(), tmp_path / "run", progress=False)
    results = outcome.result.results
    # 3 folds x 2 fractions x 2 conditions x 3 classes
    assert len(results) == 3 * 2 * 2 * 3
    assert set(results["condition"]) == {"real", "real+synthetic [Copy]"}
    html = outcome.report.html_path.read_text()
    for heading in ("Per-class results", "Accuracy per classifier", "Paired comparison", "Balanced accuracy vs",
                    "Confusion matrices", "Real and synthetic samples", "Exact spec"):
        assert heading in html
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[1].split("Exact spec")[0]


def test_synthetic_images_of_a_fold_come_only_from_its_training_patients(tmp_path):
    result = run_study(_spec(), tmp_path / "run", progress=False).result
    manifest = Manifest.read(tmp_path / "run" / "manifest.csv")
    folds = pd.read_csv(tmp_path / "run" / "folds.csv", dtype={"patient_id": str})
    patient_of = dict(zip(manifest.absolute_paths(), manifest.table["patient_id"], strict=True))
    fold_of = dict(zip(folds["patient_id"], folds["fold"], strict=True))
    assert result.synthetic_sets
    for (fold, keep, _), synthetic in result.synthetic_sets.items():
        parents = {p.resolve() for row in synthetic.parent_paths() for p in row}
        parent_patients = {patient_of[p] for p in {q for q in patient_of if q.resolve() in parents}}
        assert parent_patients and all(fold_of[p] != fold for p in parent_patients)
        assert set(synthetic.table["origin"]) == {"synthetic"}


def test_an_interrupted_study_resumes_without_recomputing_finished_units(tmp_path):
    class Stop(Exception):
        pass

    def interrupt_after_five_computed(description, computed):
        if interrupted.executor.stats.computed == 5:
            raise Stop

    interrupted = StudyRunner(_spec(), tmp_path / "run", progress=False, on_unit=interrupt_after_five_computed)
    with pytest.raises(Stop):
        interrupted.run()
    resumed = StudyRunner(_spec(), tmp_path / "run", progress=False).run()
    full = StudyRunner(_spec(), tmp_path / "fresh", progress=False).run()
    assert full.computed > 5
    assert resumed.computed == full.computed - 5
    pd.testing.assert_frame_equal(resumed.results, full.results)
    # Extending the spec (a second seed) recomputes only the new classifier runs: 3 folds x 2 keeps x 2 conditions.
    extended = StudyRunner(_spec(seeds=[0, 1]), tmp_path / "run", progress=False).run()
    assert extended.computed == 3 * 2 * 2


def test_the_progress_plan_matches_the_units_reported(tmp_path):
    planned, reported = [], []
    runner = StudyRunner(_spec(), tmp_path / "run", progress=False, on_plan=planned.append,
                         on_unit=lambda description, computed: reported.append(description))
    runner.run()
    assert planned == [len(reported)]


def test_nested_fractions_reuse_the_generator_models(tmp_path):
    StudyRunner(_spec(), tmp_path / "run", progress=False).run()
    trained = [tuple(paths) for paths in NoisyCopyGenerator.fits]
    assert len(trained) == len(set(trained))  # a model on the same image is never trained twice


def test_parallel_jobs_give_the_same_results_as_serial(tmp_path):
    spec = _spec(generators=[], regimes=["real", "real+regular"], split={"folds": 3, "keep": [1.0]})
    serial = StudyRunner(spec, tmp_path / "serial", progress=False).run()
    parallel = StudyRunner(spec, tmp_path / "parallel", progress=False, jobs=2).run()
    assert parallel.computed == serial.computed == 6
    pd.testing.assert_frame_equal(serial.results, parallel.results)


def test_quality_metrics_flag_a_generator_that_copies_its_training_images(tmp_path):
    copier = {"name": "Copier", "kind": "noisy-copy", "preset": "smoke", "overrides": {"noise": 0.0},
              "samples_per_model": 3}
    spec = _spec(generators=[copier], split={"folds": 3, "minority": "pneumonia", "keep": [1.0]},
                 quality={"enabled": True, "features": "classifier", "preset": "smoke"})
    outcome = run_study(spec, tmp_path / "run", progress=False)
    quality = outcome.result.quality
    assert set(quality["generator"]) == {"Copier"} and len(quality) == 3
    assert (quality["copy_rate"] == 1.0).all()
    assert quality["ssim"].min() > 0.99
    # The reader's real side: validation patients and unused training patients, never a copied one.
    assert (quality["reader_real_images"] > 0).all() and quality["reader_auc"].between(0, 1).all()
    assert quality["features_sha1"].notna().all()
    flags = pd.read_csv(tmp_path / "run" / "memorization_flags.csv")
    assert len(flags) == quality["images"].sum()
    # No absolute path of the run folder: a copied run folder holds the same quality.csv.
    assert str(tmp_path) not in (tmp_path / "run" / "quality.csv").read_text()
    html = outcome.report.html_path.read_text()
    assert "Memorization flags" in html and "Image quality (Table 2 style" in html


def test_generators_never_learn_from_the_early_stopping_patients(tmp_path):
    from sonosynth.experiment.runner import stopping_side

    spec = _spec(split={"folds": 3, "minority": "pneumonia", "keep": [1.0]})
    result = StudyRunner(spec, tmp_path / "run", progress=False).run()
    manifest = Manifest.read(tmp_path / "run" / "manifest.csv")
    folds = pd.read_csv(tmp_path / "run" / "folds.csv", dtype={"patient_id": str})
    from sonosynth.data.split import split_fold

    for (fold, keep, _), synthetic in result.synthetic_sets.items():
        stop = stopping_side(spec, split_fold(manifest, folds, fold, keep).train)
        held = {p.resolve() for p in stop.absolute_paths()}
        parents = {p.resolve() for row in synthetic.parent_paths() for p in row}
        assert parents and not parents & held
