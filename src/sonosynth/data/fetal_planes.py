"""Ingest of FETAL_PLANES_DB (Burgos-Artizzu et al. 2020; zenodo.org/records/3904280), the fetal study's data.

Layout: `FETAL_PLANES_DB_data.csv` (semicolon-separated: Image_name;Patient_num;Plane;Brain_plane;
Operator;US_Machine;Train) and `Images/<Image_name>.png`. The class is `Plane` (Fetal abdomen, Fetal
brain, Fetal femur, Fetal thorax, Maternal cervix, Other), the patient `Patient_num`, and `Train`
(1 train, 0 test) is kept in the manifest's `subset` column, so `split.scheme: dataset` can use the
dataset's own train/test split, as the study did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from sonosynth.data.ingest import (
    FrameOptions,
    FrameWriter,
    IngestReport,
    fingerprint,
    finish_output,
    reuse_or_check_output,
    staged_directory,
)
from sonosynth.data.manifest import Manifest
from sonosynth.data.sources import read_source
from sonosynth.errors import InputDataError
from sonosynth.progress import track

CSV_NAME = "FETAL_PLANES_DB_data.csv"
IMAGES_DIR = "Images"
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine", "Train")


class FetalPlanesIngestOptions(FrameOptions):
    # The fetal study: resize straight to 128 x 128, no crop (section 4.2).
    size: int = Field(128, ge=16, le=4096, description="side of the square output images, in pixels")
    crop: bool = Field(False, description="crop to the ultrasound content before squaring (the study did not)")
    fit: Literal["pad", "stretch"] = Field("stretch", description="pad (black borders, aspect kept) or stretch "
                                           "(the study's resize)")
    classes: list[str] | None = Field(None, description="planes to keep (default: all six)")


def read_table(source: Path) -> pd.DataFrame:
    path = source / CSV_NAME
    if not path.is_file():
        raise InputDataError(f"{path} is missing; is {source} the FETAL_PLANES_DB folder (with {CSV_NAME} and "
                             f"{IMAGES_DIR}/)?")
    try:
        table = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding_errors="replace")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot be parsed as a semicolon-separated CSV ({exc}).") from exc
    table.columns = [c.strip() for c in table.columns]  # the published file has `Train ` with a space
    missing = [c for c in ("Image_name", "Patient_num", "Plane", "Train") if c not in table.columns]
    if missing:
        raise InputDataError(f"{path}: missing column(s) {missing}; expected {';'.join(COLUMNS)}.")
    return table.apply(lambda column: column.str.strip())


def ingest_fetal_planes(source: str | os.PathLike, out: str | os.PathLike,
                        options: FetalPlanesIngestOptions | None = None, overwrite: bool = False,
                        progress: bool = True) -> tuple[Manifest, IngestReport]:
    """Ingest FETAL_PLANES_DB at `source` into images + manifest at `out` (patients and train/test kept)."""
    options = options or FetalPlanesIngestOptions()
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputDataError(f"{source} is not a folder; point to the FETAL_PLANES_DB folder.")
    table = read_table(source)
    record = fingerprint("fetal-planes", source, options)
    report = IngestReport()
    existing = reuse_or_check_output(out, record, overwrite, sources=[source])
    if existing is not None:
        report.reused = True
        return existing, report
    with staged_directory(out) as staging:
        writer = FrameWriter(staging)
        for line, row in track(list(table.iterrows()), "ingest fetal planes", enabled=progress):
            name, plane, patient, train = row["Image_name"], row["Plane"], row["Patient_num"], row["Train"]
            shown = f"{CSV_NAME} line {line + 2} ({name or 'no name'})"
            if not name or not plane:
                report.skip(shown, "empty Image_name or Plane")
                continue
            if options.classes is not None and plane not in options.classes:
                report.skip(shown, f"class not requested ({plane})")
                continue
            if train not in ("0", "1"):
                report.skip(shown, f"Train is {train!r}, not 1 (train) or 0 (test)")
                continue
            path = source / IMAGES_DIR / (name if Path(name).suffix else f"{name}.png")
            if not path.is_file():
                report.skip(shown, "image file not found")
                continue
            report.files_read += 1
            frames = read_source(path, 1.0, options, report, shown=path.relative_to(source).as_posix())
            if frames is None:
                continue
            writer.write(frames, label=plane, patient_id=f"fetal-{patient}" if patient else f"fetal-file-{name}",
                         source=path.relative_to(source).as_posix(), subset="train" if train == "1" else "test")
            if not patient:
                report.notes["no Patient_num: image is its own patient"] += 1
        finish_output(staging, writer, report, record)
    return Manifest.read(out), report
