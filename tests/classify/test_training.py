"""Training loop, augmentation presets, regimes (which images, which stages) and the classify command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.transforms import v2

from sonosynth.classify import create_classifier, load_classifier
from sonosynth.classify.augment import regular_augmentation
from sonosynth.classify.data import ManifestDataset
from sonosynth.classify.regimes import (
    REGIMES,
    check_synthetic_parents,
    clear_regime_outputs,
    drop_derived,
    plan_regime,
    read_regime_result,
    run_regime,
)
from sonosynth.classify.training import (
    _mean_loss,
    carve_stopping_set,
    class_weights,
    load_train_config,
    state_fingerprint,
    train_classifier,
)
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.data.manifest import Manifest, encode_parents
from sonosynth.data.split import make_folds, split_fold
from sonosynth.errors import InputDataError, SonosynthError

CPU = torch.device("cpu")


def smoke(**overrides):
    return load_train_config("smoke", overrides)


@pytest.fixture(scope="module")
def fold(phantom_manifest):
    """Fold 0 of 3 patient-level folds of the shared phantom (4 covid / 3 pneumonia / 4 healthy patients)."""
    return split_fold(phantom_manifest, make_folds(phantom_manifest, n_folds=3, seed=0), 0)


def make_synthetic(real: Manifest, out: Path, per_image: int = 1) -> Manifest:
    """A SyntheticSet stand-in: noisy copies of real images, with provenance pointing at them."""
    rng = np.random.default_rng(0)
    rows = []
    for path, label in zip(real.absolute_paths(), real.labels, strict=True):
        image = load_grayscale(path).astype(np.int16)
        for k in range(per_image):
            noisy = np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
            name = f"{label}/{path.stem}_s{k}.png"
            save_png(out / name, noisy)
            rows.append({"path": name, "label": label, "patient_id": "synthetic-test", "origin": "synthetic",
                         "generator": "test", "seed": k, "parents": encode_parents([path], out)})
    manifest = Manifest.from_rows(rows, out)
    manifest.write()
    return Manifest.read(out)


@pytest.fixture(scope="module")
def synthetic(fold, tmp_path_factory):
    return make_synthetic(fold.train, tmp_path_factory.mktemp("synthetic"))


# ----------------------------------------------------------------------------- augmentation, data
def test_augmentation_presets_follow_the_studies():
    lung = regular_augmentation("lung").transforms
    affine = next(t for t in lung if isinstance(t, v2.RandomAffine))
    assert affine.degrees == [-10.0, 10.0] and tuple(affine.translate) == (0.1, 0.1)
    assert {type(t) for t in lung} >= {v2.RandomHorizontalFlip, v2.RandomVerticalFlip}
    fetal = regular_augmentation("fetal").transforms
    rotation = next(t for t in fetal if isinstance(t, v2.RandomRotation))
    assert rotation.degrees == [-30.0, 30.0]
    assert {type(t) for t in fetal} >= {v2.RandomHorizontalFlip, v2.RandomVerticalFlip}
    with pytest.raises(SonosynthError, match="unknown augmentation"):
        regular_augmentation("mri")


def test_augmentation_changes_images_but_keeps_shape_and_range():
    torch.manual_seed(0)
    image = torch.rand(1, 32, 32)
    outputs = [regular_augmentation("lung")(image) for _ in range(8)]
    assert all(o.shape == image.shape and 0 <= o.min() and o.max() <= 1 for o in outputs)
    assert any(not torch.allclose(o, image) for o in outputs)


def test_dataset_resizes_indexes_classes_and_repeats_channels(fold):
    classes = ["covid", "healthy", "pneumonia"]
    data = ManifestDataset(fold.train, classes, image_size=24)
    image, target = data[0]
    assert image.shape == (1, 24, 24) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.1
    assert target == classes.index(fold.train.labels[0])
    rgb, _ = ManifestDataset(fold.train, classes, image_size=24, in_channels=3)[0]
    assert rgb.shape == (3, 24, 24) and torch.equal(rgb[0], rgb[2])
    with pytest.raises(InputDataError, match="not among the classifier's classes"):
        ManifestDataset(fold.train, ["covid", "healthy"], image_size=24)


def test_dataset_names_an_unreadable_image(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    manifest = Manifest.from_rows([{"path": "bad.png", "label": "a", "patient_id": "p"}], tmp_path)
    with pytest.raises(InputDataError, match="bad.png"):
        ManifestDataset(manifest, ["a", "b"], image_size=16)[0]


# ----------------------------------------------------------------------------- stopping set
def test_stopping_set_is_whole_training_patients_and_reproducible(fold, synthetic):
    pooled = Manifest(pd.concat([fold.train.table, synthetic.rebased(fold.train.root).table], ignore_index=True),
                      fold.train.root)
    fit, stop = carve_stopping_set(pooled, fraction=0.4, seed=3)
    stop_patients = set(stop.table["patient_id"])
    assert stop_patients, "some patients are held out"
    assert stop_patients <= set(fold.train.table["patient_id"])
    assert not stop_patients & set(fit.table["patient_id"])
    assert not stop_patients & set(fold.validation.table["patient_id"])
    assert (stop.table["origin"] == "real").all()
    assert len(fit) + len(stop) == len(pooled)
    assert set(fit.labels) == set(fold.train.labels), "no class loses all its fitting patients"
    _, again_stop = carve_stopping_set(pooled, fraction=0.4, seed=3)
    assert again_stop.table["path"].tolist() == stop.table["path"].tolist()
    assert carve_stopping_set(pooled, 0.0, 3)[1].table.empty


def test_class_weights_are_balanced():
    weights = class_weights([0, 0, 0, 1], num_classes=3)
    np.testing.assert_allclose(weights.numpy(), [4 / 6, 2.0, 1.0])


# ----------------------------------------------------------------------------- regimes as plans
def paths(manifest: Manifest) -> set[str]:
    return {str(p.resolve()) for p in manifest.absolute_paths()}


def test_every_regime_uses_exactly_its_images(fold, synthetic):
    real, synth = paths(fold.train), paths(synthetic)
    expected = {
        "real": [(real, set())],
        "real+regular": [(real, {"real", "synthetic"})],
        "real+synthetic": [(real | synth, set())],
        "real+synthetic+regular": [(real | synth, {"real", "synthetic"})],
        "synthetic-only": [(synth, set())],
        "pretrain-synthetic->finetune-real": [(synth, set()), (real, set())],
        "mixed": [(real | synth, set())],
    }
    assert set(expected) == set(REGIMES)
    for regime, stages in expected.items():
        plan = plan_regime(regime, fold.train, synthetic)
        assert [(paths(s.images), set(s.augment_origins)) for s in plan.stages] == stages, regime
        for stage in plan.stages:
            assert not paths(stage.images) & paths(fold.validation), "validation images never train"
    finetune = plan_regime("pretrain-synthetic->finetune-real", fold.train, synthetic).stages
    assert [s.name for s in finetune] == ["pretrain", "finetune"] and finetune[1].init_from_previous


def test_regimes_check_their_inputs(fold, synthetic):
    with pytest.raises(SonosynthError, match="needs synthetic images"):
        plan_regime("mixed", fold.train, None)
    with pytest.raises(SonosynthError, match="unknown regime"):
        plan_regime("real+gan", fold.train, synthetic)
    with pytest.raises(InputDataError, match="origin"):
        plan_regime("real+synthetic", synthetic, synthetic)
    assert plan_regime("real", fold.train, synthetic).stages[0].images is fold.train


def test_synthetic_images_of_evaluation_or_stopping_patients_are_kept_out(fold, tmp_path):
    leaky = make_synthetic(fold.validation.where([True] + [False] * (len(fold.validation) - 1)), tmp_path / "leaky")
    with pytest.raises(InputDataError, match="generated from validation images"):
        check_synthetic_parents(leaky, fold.validation)
    synthetic = make_synthetic(fold.train, tmp_path / "ok")
    check_synthetic_parents(synthetic, fold.validation)
    _, stop = carve_stopping_set(fold.train, 0.4, 0)
    kept = drop_derived(synthetic, stop)
    assert len(kept) == len(synthetic) - len(stop)
    parents = {str(p[0].resolve()) for p in kept.parent_paths()}
    assert not parents & paths(stop)
    # a model trained on a whole manifest (guided) that included a validation image is caught too
    fold.validation.write(tmp_path / "model" / "training" / "manifest.csv")
    whole = synthetic.table.assign(parents=encode_parents([tmp_path / "model" / "training" / "manifest.csv"],
                                                          synthetic.root))
    with pytest.raises(InputDataError, match="generated from validation images"):
        check_synthetic_parents(Manifest(whole, synthetic.root), fold.validation)


# ----------------------------------------------------------------------------- the training loop
def test_training_restores_the_best_epoch_and_stops_early(fold):
    classes = ["covid", "healthy", "pneumonia"]
    fit = ManifestDataset(fold.train, classes, image_size=32)
    # Stopping labels that disagree with the training labels: the more the model learns, the worse this loss.
    stop = ManifestDataset(fold.train, classes, image_size=32)
    stop.targets = (stop.targets + 1) % 3
    config = smoke(epochs=12, patience=2, learning_rate=0.01)
    torch.manual_seed(0)
    model = create_classifier("small_cnn", 3, image_size=32)
    result = train_classifier(model, fit, stop, config, CPU, progress=False)
    history = result.history
    assert result.stopped_early and len(history) < 12
    assert result.best_epoch == int(history.loc[history["stop_loss"].idxmin(), "epoch"])
    assert _mean_loss(model, stop, CPU, None, 8) == pytest.approx(history["stop_loss"].min(), rel=1e-5)
    # with a warm-up, the epochs before it can be neither best nor count towards patience
    torch.manual_seed(0)
    model = create_classifier("small_cnn", 3, image_size=32)
    warm = train_classifier(model, fit, stop, config.model_copy(update={"warmup_epochs": 4}), CPU, progress=False)
    assert warm.best_epoch >= 5 and len(warm.history) >= 5 + config.patience - 1


def test_without_early_stopping_every_epoch_runs_and_the_best_is_kept(fold):
    classes = ["covid", "healthy", "pneumonia"]
    fit = ManifestDataset(fold.train, classes, image_size=32)
    stop = ManifestDataset(fold.train, classes, image_size=32)
    stop.targets = (stop.targets + 1) % 3  # the more it learns, the worse: an early epoch is best
    torch.manual_seed(0)
    model = create_classifier("small_cnn", 3, image_size=32)
    config = smoke(epochs=6, patience=1, learning_rate=0.01, early_stopping=False)
    result = train_classifier(model, fit, stop, config, CPU, progress=False)
    assert len(result.history) == 6 and not result.stopped_early
    assert result.best_epoch == int(result.history.loc[result.history["stop_loss"].idxmin(), "epoch"])


def test_bf16_training_is_a_switch_that_learns_like_fp32_and_leaves_fp32_weights(fold):
    classes = ["covid", "healthy", "pneumonia"]
    fit = ManifestDataset(fold.train, classes, image_size=32)
    results = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_classifier("small_cnn", 3, image_size=32)
        config = smoke(epochs=4, learning_rate=0.01, early_stopping=False, precision=precision)
        history = train_classifier(model, fit, None, config, CPU, progress=False).history
        weights = model.state_dict()
        assert all(w.dtype == torch.float32 and w.is_contiguous() for w in weights.values() if w.is_floating_point())
        results[precision] = (history["train_loss"].to_numpy(), torch.cat([w.flatten() for w in weights.values()
                                                                           if w.is_floating_point()]))
    (loss32, w32), (loss16, w16) = results["fp32"], results["bf16"]
    assert loss16[-1] < loss16[0] and loss32[-1] < loss32[0]        # both learn
    assert not torch.equal(w32, w16)                                 # bf16 is a different computation ...
    assert abs(loss16[-1] - loss32[-1]) < 0.25 * loss32[0]           # ... that ends near the fp32 one


def test_precision_is_validated_and_fp32_keeps_the_cache_key_of_runs_made_before_it():
    assert "precision" not in smoke().unit_fields()
    assert smoke(precision="bf16").unit_fields()["precision"] == "bf16"
    with pytest.raises(SonosynthError, match="precision"):
        smoke(precision="fp16")


def test_augment_real_augments_the_real_images_of_every_regime(fold, synthetic):
    for regime in REGIMES:
        plan = plan_regime(regime, fold.train, synthetic, augment_real=True)
        for stage in plan.stages:
            rows = stage.images.table["origin"]
            augmented = pd.Series(stage.augment_rows(), index=rows.index)
            assert augmented[rows == "real"].all(), (regime, stage.name)
            if "regular" not in regime:  # the fetal study augmented real images only
                assert not augmented[rows == "synthetic"].any(), (regime, stage.name)
    plain = plan_regime("real", fold.train, None)
    assert not any(plain.stages[0].augment_rows())


def test_training_is_deterministic_and_resumes_exactly(fold, tmp_path, monkeypatch):
    from sonosynth.classify import training

    classes = ["covid", "healthy", "pneumonia"]

    def run(state_path=None, losses=None):
        torch.manual_seed(0)
        model = create_classifier("small_cnn", 3, image_size=32)
        data = ManifestDataset(fold.train, classes, 32, augment=regular_augmentation("lung"))
        result = train_classifier(model, data, None, smoke(epochs=3), CPU, state_path=state_path,
                                  losses_csv=losses, progress=False)
        return state_fingerprint(model), result

    reference, _ = run()
    assert run()[0] == reference

    saved = training.save_checkpoint

    def save_then_crash(path, payload):
        saved(path, payload)
        if len(payload["history"]) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    state, losses = tmp_path / "state.pt", tmp_path / "losses.csv"
    with pytest.raises(KeyboardInterrupt):
        run(state, losses)
    assert state.is_file() and len(pd.read_csv(losses)) == 2
    monkeypatch.setattr(training, "save_checkpoint", saved)
    resumed, result = run(state, losses)
    assert result.resumed_from_epoch == 2 and resumed == reference
    assert not state.exists() and pd.read_csv(losses)["epoch"].tolist() == [1, 2, 3]


# ----------------------------------------------------------------------------- running regimes
def test_run_regime_scores_only_real_validation_images(fold, synthetic, tmp_path):
    result = run_regime("real+synthetic", "small_cnn", fold, tmp_path, smoke(epochs=2, stop_fraction=0.4),
                        synthetic=synthetic, device="cpu", progress=False)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert predictions["path"].tolist() == fold.validation.table["path"].tolist()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"covid", "healthy", "pneumonia"}
    assert sum(v["support"] for v in metrics["per_class"].values()) == len(fold.validation)
    confusion = pd.read_csv(tmp_path / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == len(fold.validation)
    losses = pd.read_csv(tmp_path / "losses.csv")
    assert losses["epoch"].tolist() == [1, 2] and (tmp_path / "model.pt").is_file()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["stop_patients"] and not set(run["stop_patients"]) & set(fold.validation.table["patient_id"])
    trained = sum(row["images"] for row in run["plan"])
    stop_images = run["stop_images"]
    # real training images minus the stopping patients, plus the synthetic images not made from them
    assert trained == (len(fold.train) - stop_images) + (len(synthetic) - stop_images)
    assert {row["origin"] for row in run["plan"]} == {"real", "synthetic"}
    assert read_regime_result(tmp_path).metrics == result.metrics


def test_the_classify_unit_reuses_a_finished_folder_only_for_the_same_inputs(fold, tmp_path):
    from sonosynth.experiment.cache import run_in
    from sonosynth.experiment.plan import regime_unit

    def unit(**changes):
        return regime_unit("real", "small_cnn", smoke(epochs=1, **changes), fold, None, None, device="cpu",
                           progress=False)

    out = tmp_path / "run"
    assert run_in(out, unit(), out, clear=clear_regime_outputs)
    first = read_regime_result(out)
    assert not run_in(out, unit(), out, clear=clear_regime_outputs)  # same inputs: reused
    assert run_in(out, unit(learning_rate=0.01), out, clear=clear_regime_outputs)  # other inputs: recomputed
    assert read_regime_result(out).stages[0].end_fingerprint != first.stages[0].end_fingerprint


def test_pretrain_then_finetune_really_reloads_the_pretrained_checkpoint(fold, synthetic, tmp_path, monkeypatch):
    from sonosynth import classify

    loaded = []
    real_load = classify.load_classifier

    def spy(path, device="cpu"):
        loaded.append(Path(path))
        return real_load(path, device)

    monkeypatch.setattr(classify, "load_classifier", spy)
    result = run_regime("pretrain-synthetic->finetune-real", "small_cnn", fold, tmp_path, smoke(epochs=2),
                        synthetic=synthetic, device="cpu", progress=False)
    pretrain_checkpoint = tmp_path / "pretrain.pt"
    assert loaded == [pretrain_checkpoint]
    pretrain, finetune = result.stages
    assert finetune.initialised_from == str(pretrain_checkpoint)
    pretrained_model, classes = real_load(pretrain_checkpoint)
    assert classes == result.classes
    # the fine-tuning stage started from exactly the stored weights, and then moved away from them
    assert finetune.start_fingerprint == state_fingerprint(pretrained_model) == pretrain.end_fingerprint
    assert finetune.end_fingerprint != finetune.start_fingerprint
    final, _ = load_classifier(tmp_path / "model.pt")
    assert state_fingerprint(final) == finetune.end_fingerprint
    assert set(pd.read_csv(tmp_path / "losses.csv")["stage"]) == {"pretrain", "finetune"}


def test_small_cnn_beats_chance_on_held_out_patients(tmp_path_factory):
    from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset

    out = tmp_path_factory.mktemp("phantom-larger") / "data"
    options = PhantomOptions(patients={"covid": 9, "pneumonia": 9, "healthy": 9}, frames=3, size=64, seed=1)
    manifest, _ = make_phantom_dataset(out, options, progress=False)
    data = split_fold(manifest, make_folds(manifest, n_folds=3, seed=0), 0)
    assert not set(data.train.table["patient_id"]) & set(data.validation.table["patient_id"])
    config = smoke(epochs=16, patience=5, image_size=48, learning_rate=0.002)
    result = run_regime("real+regular", "small_cnn", data, out.parent / "run", config, device="cpu", progress=False)
    # chance is 1/3 on these 9 held-out patients; this fold scored 0.78 and other phantom seeds/folds 0.78-1.0
    assert result.metrics["balanced_accuracy"] > 0.6


def test_classify_command_writes_the_outputs(phantom_manifest, fold, tmp_path):
    from typer.testing import CliRunner

    from sonosynth.cli import app
    from sonosynth.data.split import write_folds

    folds = write_folds(make_folds(phantom_manifest, n_folds=3, seed=0), tmp_path / "folds.csv")
    out = tmp_path / "run"
    arguments = ["classify", str(phantom_manifest.root), "--folds", str(folds), "--fold", "0", "--model", "small_cnn",
                 "--regime", "real", "--preset", "smoke", "--set", "epochs=1", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.output and "balanced accuracy" in result.output and "done in" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "per_class"} <= metrics.keys()
    assert set(metrics["per_class"]["covid"]) == {"precision", "recall", "f1", "support"}
    assert (out / "confusion.csv").is_file() and (out / "predictions.csv").is_file()
    bad = CliRunner().invoke(app, [*arguments[:8], "--regime", "mixed", *arguments[10:]])
    assert isinstance(bad.exception, SonosynthError) and "needs synthetic" in str(bad.exception)
    shutil.rmtree(out)


def test_a_retrained_pretrained_checkpoint_at_the_same_path_is_not_reused(fold, tmp_path):
    from sonosynth.experiment.cache import run_in
    from sonosynth.experiment.plan import regime_unit

    # The unit's key holds the weights' contents, not only their path.
    for name, seed in (("a", 0), ("b", 1)):
        run_regime("real", "small_cnn", fold, tmp_path / name, smoke(epochs=1, seed=seed), device="cpu", progress=False)
    weights = tmp_path / "init.pt"
    out = tmp_path / "finetuned"
    runs = []
    for source in ("a", "b"):
        shutil.copy(tmp_path / source / "model.pt", weights)
        unit = regime_unit("real", "small_cnn", smoke(epochs=1), fold, None, None, pretrained=str(weights),
                           device="cpu", progress=False)
        assert run_in(out, unit, out, clear=clear_regime_outputs)
        runs.append(read_regime_result(out))
        assert runs[-1].stages[0].start_fingerprint == state_fingerprint(load_classifier(weights)[0])
    assert runs[0].stages[0].start_fingerprint != runs[1].stages[0].start_fingerprint
