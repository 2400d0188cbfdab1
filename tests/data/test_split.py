import itertools

import numpy as np
import pandas as pd
import pytest

from sonosynth.data.manifest import Manifest
from sonosynth.data.split import (
    kept_minority_patients,
    make_folds,
    read_folds,
    split_fold,
    write_folds,
)
from sonosynth.errors import InputDataError

KEEPS = (0.25, 0.5, 0.75, 1.0)


def _manifest(patients=None, seed=0, mixed=0):
    """A synthetic manifest (no files needed): patients with 2-9 images each; `mixed` pneumonia patients
    also have healthy images, as in the real POCUS data."""
    patients = patients or {"covid": 20, "pneumonia": 12, "healthy": 24}
    rng = np.random.default_rng(seed)
    rows = []
    for label, count in patients.items():
        for p in range(count):
            for i in range(rng.integers(2, 10)):
                rows.append({"path": f"{label}/{p}/{i}.png", "label": label, "patient_id": f"{label}-{p}"})
    for p in range(mixed):
        rows.append({"path": f"mixed/{p}.png", "label": "healthy", "patient_id": f"pneumonia-{p}"})
    return Manifest.from_rows(rows, "/nonexistent")


def test_no_patient_on_both_sides_of_any_fold_and_every_image_validated_once():
    manifest = _manifest(mixed=3)
    folds = make_folds(manifest, n_folds=5, seed=1, minority="pneumonia")
    seen = []
    for fold in range(5):
        data = split_fold(manifest, folds, fold)
        assert not set(data.train.table["patient_id"]) & set(data.validation.table["patient_id"])
        seen.extend(data.validation.table["path"])
    assert sorted(seen) == sorted(manifest.table["path"])


def test_class_proportions_are_roughly_kept():
    manifest = _manifest()
    folds = make_folds(manifest, n_folds=4, seed=0)
    overall = manifest.table["label"].value_counts(normalize=True)
    for fold in range(4):
        share = split_fold(manifest, folds, fold).validation.table["label"].value_counts(normalize=True)
        assert ((share.reindex(overall.index).fillna(0) - overall).abs() < 0.15).all()


def test_minority_subsets_are_nested_and_sized_by_ceil():
    manifest = _manifest()
    folds = make_folds(manifest, n_folds=5, seed=3, minority="pneumonia")
    for fold in range(5):
        training_minority = folds[(folds["fold"] != fold) & (folds["label"] == "pneumonia")]
        kept = [kept_minority_patients(folds, fold, k) for k in KEEPS]
        for smaller, larger in itertools.pairwise(kept):
            assert smaller <= larger
        assert [len(k) for k in kept] == [int(np.ceil(f * len(training_minority))) for f in KEEPS]
        assert kept[-1] == set(training_minority["patient_id"])


def test_subsampling_touches_only_the_training_side_and_only_minority_images():
    manifest = _manifest(mixed=4)
    folds = make_folds(manifest, n_folds=5, seed=0, minority="pneumonia")
    full = split_fold(manifest, folds, 2, keep=1.0)
    cut = split_fold(manifest, folds, 2, keep=0.25)
    pd.testing.assert_frame_equal(full.validation.table, cut.validation.table)
    dropped = full.train.table[~full.train.table["path"].isin(cut.train.table["path"])]
    assert set(dropped["label"]) == {"pneumonia"}
    kept = kept_minority_patients(folds, 2, 0.25)
    assert set(cut.train.with_labels(["pneumonia"]).table["patient_id"]) == kept
    # A minority patient's images of another class stay even when the patient is not kept.
    mixed_images = full.train.table[full.train.table["path"].str.startswith("mixed/")]
    assert set(mixed_images["path"]) <= set(cut.train.table["path"])


def test_same_seed_same_folds_other_seed_other_folds(tmp_path):
    manifest = _manifest()
    a = make_folds(manifest, seed=7, minority="pneumonia")
    b = make_folds(manifest, seed=7, minority="pneumonia")
    pd.testing.assert_frame_equal(a, b)
    assert not a["fold"].equals(make_folds(manifest, seed=8, minority="pneumonia")["fold"])
    write_folds(a, tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(read_folds(tmp_path / "folds.csv"), a, check_dtype=False)


def test_bad_split_requests_are_clear_errors():
    manifest = _manifest({"covid": 2, "healthy": 1})
    with pytest.raises(InputDataError, match="only 3 patients"):
        make_folds(manifest, n_folds=5)
    with pytest.raises(InputDataError, match="minority class 'pneumonia'"):
        make_folds(manifest, n_folds=2, minority="pneumonia")
    folds = make_folds(_manifest(), n_folds=5)
    with pytest.raises(InputDataError, match="fold 9"):
        split_fold(_manifest(), folds, 9)
    with pytest.raises(InputDataError, match="not in the folds table"):
        split_fold(_manifest({"covid": 30, "pneumonia": 12, "healthy": 24}), folds, 0)


def test_a_folds_table_for_other_data_is_an_error_naming_patient_and_file(tmp_path):
    manifest = _manifest()
    path = write_folds(make_folds(manifest, n_folds=5), tmp_path / "folds.csv")
    good = read_folds(path)
    split_fold(manifest, good, 0)
    patient = good["patient_id"].iloc[0]
    other_label = next(c for c in manifest.classes if c != good["label"].iloc[0])
    relabelled = good.copy()
    relabelled.loc[0, "label"] = other_label
    with pytest.raises(InputDataError, match=rf"{path}: patient {patient} has label '{other_label}'"):
        split_fold(manifest, relabelled, 0)
    extra = pd.concat([good, pd.DataFrame([{"patient_id": "stranger", "label": other_label, "fold": 0}])],
                      ignore_index=True)
    extra.attrs["path"] = str(path)
    with pytest.raises(InputDataError, match=rf"{path} lists 1 patient\(s\) with no image.*stranger"):
        split_fold(manifest, extra, 0)
    missing = good.iloc[1:].copy()
    with pytest.raises(InputDataError, match=rf"not in the folds table {path} \(e.g. {patient}\)"):
        split_fold(manifest, missing, 0)
