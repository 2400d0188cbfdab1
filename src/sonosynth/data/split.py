"""Patient-level stratified k-fold splits and nested minority-class subsampling.

Consecutive frames of one clip are near-duplicates, so every split here is by patient. The
minority rule lives in one function, `kept_minority_patients`, which every stage uses:
in training fold k at fraction f, the minority patients kept are the ceil(f*n) lowest-ranked of
the n minority patients on fold k's training side. Ranks are fixed per patient, so the kept sets
are nested (25% inside 50% inside 75%) and a curve over fractions compares like with like.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from sonosynth.atomic import atomic_path
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError

FOLD_COLUMNS = ("patient_id", "label", "fold", "minority_rank")


def patient_labels(manifest: Manifest) -> pd.Series:
    """One stratification label per patient: the class of most of the patient's images.

    A patient can have images of two classes (the POCUS data has pneumonia patients with clips of
    healthy lung regions). Such a patient still goes to exactly one fold as a whole; the label here
    only balances the folds. Ties go to the alphabetically first class, for determinism.
    """
    counts = manifest.table.groupby(["patient_id", "label"]).size().rename("n").reset_index()
    counts = counts.sort_values(["patient_id", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("patient_id").set_index("patient_id")["label"].astype(str).sort_index()


def mixed_label_patients(manifest: Manifest) -> list[str]:
    """Patients with images of more than one class (reported, since they deserve a look)."""
    per_patient = manifest.table.groupby("patient_id")["label"].nunique()
    return sorted(per_patient[per_patient > 1].index)


def make_folds(manifest: Manifest, n_folds: int = 5, seed: int = 0, minority: str | None = None) -> pd.DataFrame:
    """Assign every patient to one of `n_folds` folds, stratified by class, reproducible per seed.

    Returns the folds table: one row per patient with `patient_id, label, fold, minority_rank`,
    where `minority_rank` is a seeded uniform number in [0, 1) for minority-class patients.
    """
    labels = patient_labels(manifest)
    if n_folds < 2:
        raise InputDataError("--folds must be at least 2.")
    if len(labels) < n_folds:
        raise InputDataError(f"only {len(labels)} patients for {n_folds} folds; use fewer folds or more patients.")
    if minority is not None and minority not in set(manifest.table["label"]):
        raise InputDataError(
            f"minority class {minority!r} has no images in the manifest; known classes: {manifest.classes}."
        )
    # Stratify the images (what the classifier sees) while keeping each patient's images together.
    table = manifest.table
    patient_index = pd.Index(labels.index)
    rows = patient_index.get_indexer(table["patient_id"])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_of = np.full(len(labels), -1, dtype=int)
    with warnings.catch_warnings():
        # sklearn warns when a class has fewer patients than folds; the summary shows that instead.
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, validation) in enumerate(splitter.split(rows, table["label"].to_numpy(), groups=rows)):
            fold_of[np.unique(rows[validation])] = fold
    has_minority = labels.index.isin(manifest.table.loc[manifest.table["label"] == minority, "patient_id"])
    if minority is not None:
        # A patient with any minority image counts as a minority patient, so the folds table names the
        # subsampled class for every ranked patient (split_fold relies on it).
        labels = labels.where(~has_minority, minority)
    rng = np.random.default_rng(seed)
    ranks = rng.random(len(labels))
    folds = pd.DataFrame({"patient_id": labels.index.astype(str).to_numpy(dtype=object),
                          "label": labels.to_numpy(dtype=object), "fold": fold_of})
    # Only that patient's minority-class images are subject to the cut; its other images always stay.
    folds["minority_rank"] = np.where(has_minority, ranks, np.nan) if minority else np.nan
    return folds


def dataset_folds(manifest: Manifest, seed: int = 0, minority: str | None = None) -> pd.DataFrame:
    """The dataset's own train/test split (the manifest's `subset` column) as a folds table: fold 0 holds the
    test patients (the one evaluated fold), fold 1 the training patients. Minority ranks as in make_folds."""
    subset = manifest.table["subset"]
    if subset.isna().any():
        raise InputDataError(f"{manifest.root}: {int(subset.isna().sum())} image(s) have no `subset` (train/test); "
                             "split.scheme: dataset needs a dataset that has its own split (ingest fetal-planes).")
    sides = manifest.table.groupby("patient_id")["subset"].agg(lambda values: sorted(set(values)))
    both = sorted(p for p, values in sides.items() if len(values) > 1)
    if both:
        raise InputDataError(f"{manifest.root}: patient(s) {both[:5]} have images in both the train and the test "
                             "subset; a patient-level evaluation cannot use this split (use split.scheme: kfold).")
    unknown = sorted({v for values in sides for v in values} - {"train", "test"})
    if unknown:
        raise InputDataError(f"{manifest.root}: `subset` values {unknown}; expected train or test.")
    folds = make_folds(manifest, 2, seed, minority)  # patients, labels and minority ranks
    side = sides.map(lambda values: values[0])
    folds["fold"] = np.where(folds["patient_id"].map(side) == "test", 0, 1)
    if not (folds["fold"] == 0).any() or not (folds["fold"] == 1).any():
        raise InputDataError(f"{manifest.root}: the dataset split needs both train and test images.")
    return folds


def kept_minority_patients(folds: pd.DataFrame, fold: int, keep: float, held_out: Iterable[str] = ()) -> set[str]:
    """The minority patients kept on the training side of `fold` at fraction `keep` (nested in keep).

    With `held_out` (an early-stopping set carved first), ceil(keep x n) of all n training minority
    patients are still kept, drawn from those outside it; the held-out ones stay listed (their images are
    the stopping set's, removed from fitting by whoever holds the stopping set).
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    training = folds[(folds["fold"] != fold) & folds["minority_rank"].notna()]
    ranked = training.sort_values(["minority_rank", "patient_id"])
    count = math.ceil(keep * len(ranked) - 1e-9)
    held = set(map(str, held_out))
    if not held:
        return set(ranked["patient_id"].iloc[:count])
    patients = ranked["patient_id"].astype(str)
    outside = patients[~patients.isin(held)]
    return set(outside.iloc[:count]) | (set(patients) & held)


@dataclass(frozen=True)
class FoldData:
    train: Manifest
    validation: Manifest


def check_folds_match(manifest: Manifest, folds: pd.DataFrame) -> None:
    """Refuse a folds table made for other data: the same patients as the manifest, each with one of its classes.

    A patient's folds label is the class of most of their images (or the minority class when they
    have any minority image), so it must be a class the patient has images of in the manifest.
    """
    where = folds.attrs.get("path", "the folds table")
    redo = f"re-run `sonosynth split {manifest.root}` to make the folds of this manifest."
    classes_of = manifest.table.groupby("patient_id")["label"].agg(lambda labels: set(map(str, labels)))
    listed = set(folds["patient_id"].astype(str))
    missing = sorted(set(classes_of.index) - listed)
    if missing:
        raise InputDataError(f"{len(missing)} patient(s) of the manifest are not in the folds table {where} "
                             f"(e.g. {', '.join(missing[:3])}); {redo}")
    extra = sorted(listed - set(classes_of.index))
    if extra:
        raise InputDataError(f"{where} lists {len(extra)} patient(s) with no image in the manifest {manifest.root} "
                             f"(e.g. {', '.join(extra[:3])}); {redo}")
    for patient, label in zip(folds["patient_id"].astype(str), folds["label"].astype(str), strict=True):
        if label not in classes_of[patient]:
            raise InputDataError(f"{where}: patient {patient} has label {label!r} there, but the manifest "
                                 f"{manifest.root} gives them {', '.join(sorted(classes_of[patient]))}; {redo}")


def split_fold(manifest: Manifest, folds: pd.DataFrame, fold: int, keep: float = 1.0,
               held_out: Iterable[str] = ()) -> FoldData:
    """Training and validation manifests of one fold, the minority class cut to `keep` on the training side
    (with `held_out` stopping patients, see kept_minority_patients)."""
    if fold not in set(folds["fold"]):
        raise InputDataError(f"fold {fold} is not in the folds table (folds: {sorted(set(folds['fold']))}).")
    check_folds_match(manifest, folds)
    fold_of = folds.set_index("patient_id")["fold"]
    patient_fold = manifest.table["patient_id"].map(fold_of)
    ranked = folds.loc[folds["minority_rank"].notna(), "patient_id"]
    # A minority image is one of the subsampled class: the ranked patients' images of that class.
    minority_labels = set(folds.loc[folds["minority_rank"].notna(), "label"])
    is_minority_image = manifest.table["patient_id"].isin(ranked) & manifest.table["label"].isin(minority_labels)
    kept = kept_minority_patients(folds, fold, keep, held_out)
    train_mask = (patient_fold != fold) & (~is_minority_image | manifest.table["patient_id"].isin(kept))
    return FoldData(manifest.where(train_mask), manifest.where(patient_fold == fold))


def fold_summary(manifest: Manifest, folds: pd.DataFrame, keeps: Sequence[float] = (1.0,)) -> pd.DataFrame:
    """Per fold and class: patients and images on each side, and minority patients kept per fraction."""
    records = []
    for fold in sorted(folds["fold"].unique()):
        data = split_fold(manifest, folds, fold)
        for label in sorted(folds["label"].unique()):
            train = data.train.with_labels([label])
            validation = data.validation.with_labels([label])
            record = {
                "fold": int(fold),
                "class": label,
                "train pat": train.table["patient_id"].nunique(),
                "train img": len(train),
                "val pat": validation.table["patient_id"].nunique(),
                "val img": len(validation),
            }
            if folds.loc[folds["label"] == label, "minority_rank"].notna().any():
                for keep in keeps:
                    kept = kept_minority_patients(folds, fold, keep)
                    images = int(train.table["patient_id"].isin(kept).sum())
                    record[f"kept {keep:.0%}"] = f"{len(kept)}p/{images}i"
            records.append(record)
    return pd.DataFrame.from_records(records)


def same_assignment(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two folds tables put the same patients in the same folds (dtypes aside)."""
    def assignment(table: pd.DataFrame) -> dict[str, int]:
        return dict(zip(table["patient_id"].astype(str), table["fold"].astype(int), strict=True))

    return assignment(a) == assignment(b)


def write_folds(folds: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        folds.loc[:, list(FOLD_COLUMNS)].to_csv(tmp, index=False)
    return path


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: no folds table here; make one with `sonosynth split MANIFEST --out {path}`.")
    table = pd.read_csv(path, dtype={"patient_id": str, "label": str})
    missing = [c for c in FOLD_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(f"{path}: not a folds table (missing columns {missing}).")
    if table["patient_id"].duplicated().any():
        raise InputDataError(f"{path}: a patient appears twice; each patient belongs to exactly one fold.")
    table.attrs["path"] = str(path)  # named in errors when the table does not match a manifest
    return table
