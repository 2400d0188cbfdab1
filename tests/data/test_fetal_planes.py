"""FETAL_PLANES_DB ingest and its own train/test split, on a small folder in the dataset's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sonosynth.data.fetal_planes import FetalPlanesIngestOptions, ingest_fetal_planes
from sonosynth.data.images import load_grayscale, save_png
from sonosynth.data.split import dataset_folds, split_fold
from sonosynth.errors import InputDataError

PLANES = ("Fetal abdomen", "Fetal brain", "Other")


def write_fetal_planes(root: Path, patients: int = 6, per_patient: int = 2, size: tuple[int, int] = (60, 90)) -> Path:
    """A FETAL_PLANES_DB-shaped folder: the semicolon CSV (with the published `Train ` header) and Images/*.png."""
    rng = np.random.default_rng(0)
    (root / "Images").mkdir(parents=True, exist_ok=True)
    lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train "]
    for patient in range(patients):
        train = 0 if patient % 3 == 0 else 1
        for k in range(per_patient):
            plane = PLANES[(patient + k) % len(PLANES)]
            name = f"Patient{patient:05d}_Plane{k}_1_of_1"
            image = rng.integers(0, 255, size, dtype=np.uint8)
            save_png(root / "Images" / f"{name}.png", image)
            brain = "Trans-thalamic" if plane == "Fetal brain" else "Not A Brain"
            lines.append(f"{name};{patient};{plane};{brain};Op. 1;Voluson E6;{train}")
    (root / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_ingest_keeps_planes_patients_and_the_train_flag(tmp_path):
    source = write_fetal_planes(tmp_path / "db")
    manifest, report = ingest_fetal_planes(source, tmp_path / "out", progress=False)
    assert len(manifest) == 12 and report.files_read == 12
    assert set(manifest.classes) == set(PLANES)
    assert manifest.table["patient_id"].nunique() == 6
    test = manifest.table[manifest.table["subset"] == "test"]
    assert set(test["patient_id"]) == {"fetal-0", "fetal-3"}
    # the study's preprocessing: no crop, stretched to 128 x 128
    assert load_grayscale(manifest.absolute_paths()[0]).shape == (128, 128)


def test_pad_keeps_the_aspect(tmp_path):
    source = write_fetal_planes(tmp_path / "db", patients=1, per_patient=1, size=(40, 80))
    manifest, _ = ingest_fetal_planes(source, tmp_path / "out", FetalPlanesIngestOptions(size=32, fit="pad"),
                                      progress=False)
    image = load_grayscale(manifest.absolute_paths()[0])
    assert image.shape == (32, 32) and image[:4].max() == 0  # black bands above and below


def test_dataset_split_is_the_test_set_as_fold_0(tmp_path):
    manifest, _ = ingest_fetal_planes(write_fetal_planes(tmp_path / "db"), tmp_path / "out", progress=False)
    folds = dataset_folds(manifest)
    data = split_fold(manifest, folds, 0)
    assert set(data.validation.table["subset"]) == {"test"} and set(data.train.table["subset"]) == {"train"}


def test_a_patient_on_both_sides_is_refused(tmp_path):
    source = write_fetal_planes(tmp_path / "db")
    csv = source / "FETAL_PLANES_DB_data.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1][:-1] + "1"  # patient 0's first image moves to train, its second stays in test
    csv.write_text("\n".join(lines) + "\n")
    manifest, _ = ingest_fetal_planes(source, tmp_path / "out", progress=False)
    with pytest.raises(InputDataError, match="both the train and the test"):
        dataset_folds(manifest)


def test_missing_csv_names_the_file(tmp_path):
    (tmp_path / "db").mkdir()
    with pytest.raises(InputDataError, match="FETAL_PLANES_DB_data.csv is missing"):
        ingest_fetal_planes(tmp_path / "db", tmp_path / "out", progress=False)
