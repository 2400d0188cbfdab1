"""Every shipped study preset must load, resolve every config it names, and plan a study.

Presets whose data is not here (the lung and fetal datasets) are planned on a small phantom stand-in
with the classes they name, so the plan's structure is checked without the real images.
"""

from pathlib import Path

import pytest

from sonosynth.experiment.plan import build_plan, conditions, fold_list, resolve_study
from sonosynth.experiment.spec import load_spec

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_presets_exist():
    assert {p.stem for p in CONFIGS} >= {"demo", "lung-cpu", "lung-paper", "fetal-paper", "fetal-cpu"}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """Phantom images standing in for the study data: enough patients for five folds."""
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset
    from sonosynth.data.split import make_folds

    manifest, _ = make_phantom_dataset(tmp_path_factory.mktemp("stand-in"),
                                       PhantomOptions(patients={"covid": 8, "pneumonia": 8, "healthy": 8}, frames=2,
                                                      size=32), progress=False)

    def folds(spec):
        return make_folds(manifest, spec.split.folds, spec.split.seed, spec.split.minority)

    return manifest, folds


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_preset_resolves_and_plans(path, stand_in):
    spec = load_spec(path)
    study = resolve_study(spec)  # every generator and classifier config, overrides and sample settings
    assert [g.spec.name for g in study.generators] == [g.name for g in spec.generators]
    assert set(study.classifiers[0].configs) == set(spec.seeds)

    manifest, folds = stand_in
    plan = build_plan(study, manifest, folds(spec))
    keys = [unit.key for unit in plan]
    assert len(keys) == len(set(keys)) == len(plan)
    position = {key: i for i, key in enumerate(keys)}
    for unit in plan:
        assert all(position[dep] < position[unit.key] for dep in unit.depends_on), unit.description
    cells = len(fold_list(spec)) * len(spec.split.keep)
    assert len(plan.classifier_runs) == cells * len(conditions(spec)) * len(spec.classifiers) * len(spec.seeds)
    if spec.generators:
        assert plan.of_kind("fit") and plan.of_kind("sample")
    arms = sum(len(g.arms()) for g in spec.generators)
    assert len(plan.quality_runs) == (cells * arms if spec.quality.enabled else 0)


def test_fetal_paper_follows_the_study():
    spec = load_spec(Path(__file__).resolve().parents[2] / "configs" / "fetal-paper.yaml")
    study = resolve_study(spec)
    options = spec.data.fetal_planes.options
    assert (options.size, options.crop, options.fit) == (128, False, "stretch")
    assert spec.split.scheme == "dataset"
    assert spec.generators[0].rounds == [1, 2] and spec.generators[0].samples_per_model == 5000
    assert [c.spec.model for c in study.classifiers] == ["resnet50", "densenet169", "vit_b_32", "swin_t", "medmamba_t"]
    for classifier in study.classifiers:
        config = classifier.configs[0]
        assert (config.epochs, config.batch_size, config.learning_rate, config.image_size) == (200, 32, 1e-4, 128)
        assert not config.early_stopping and config.stop_fraction > 0  # best epoch on held-out training patients
        assert config.augmentation == "fetal" and config.augment_real


def test_an_augmentation_no_regime_uses_is_an_error():
    from sonosynth.errors import SonosynthError
    from sonosynth.experiment.spec import StudySpec

    spec = StudySpec.model_validate({
        "name": "x", "data": {"phantom": {}}, "regimes": ["real"],
        "classifiers": [{"model": "small_cnn", "preset": "smoke", "overrides": {"augmentation": "fetal"}}]})
    with pytest.raises(SonosynthError, match=r"classifiers\[0\]\.overrides\.augmentation.*augment_real"):
        resolve_study(spec)


def test_lung_cpu_reaches_the_sinddm_options_through_the_spec():
    study = resolve_study(load_spec(CONFIGS[[p.stem for p in CONFIGS].index("lung-cpu")]))
    sinddm, fewddm = study.generator("SinDDM"), study.generator("FewDDM")
    assert sinddm.config.prediction == fewddm.config.prediction == "v"
    assert (sinddm.config.budget_seconds, fewddm.config.budget_seconds) == (150, 300)
    assert sinddm.config.coarsest_max == 32 and sinddm.config.sample_gamma_max == fewddm.config.sample_gamma_max == 0
    assert {config.precision for config in study.classifiers[0].configs.values()} == {"bf16"}
    assert fewddm.config.image_embedding and fewddm.spec.max_images_per_model == 3
    assert fewddm.config.blurry_input and not sinddm.config.blurry_input
    assert {g.spec.image_choice for g in study.generators} == {"typical"}
    assert (study.quality.reader.image_size, study.quality.reader.stem_stride) == (128, 2)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("prediction", "x0", "prediction"), ("budget", "soon", "budget"), ("compiled_depthwise_grad", "maybe",
                                                                      "compiled_depthwise_grad"),
    ("blurry_input", "sometimes", "blurry_input")])
def test_a_bad_sinddm_option_in_a_spec_names_the_field(tmp_path, field, value, message):
    from sonosynth.errors import SonosynthError

    spec = load_spec(CONFIGS[[p.stem for p in CONFIGS].index("demo")])
    generators = [g.model_copy(update={"overrides": {**g.overrides, field: value}}) if g.kind == "sinddm" else g
                  for g in spec.generators]
    with pytest.raises(SonosynthError, match=rf"generators\[0\]\.overrides\.{message}"):
        resolve_study(spec.model_copy(update={"generators": generators}))
