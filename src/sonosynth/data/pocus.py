"""Ingest of the public COVID-19 POCUS lung-ultrasound dataset (Born et al., 2021).

Layout: `pocus_images/<probe>/`, `pocus_videos/<probe>/` and `dataset_metadata.csv`, whose
`Filename` column holds each file's name without extension. The class comes from the metadata
`Label` (the file-name prefix is the fallback); the patient from `Patient ID / Name` (a file
without one is its own patient, since nothing says otherwise).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from sonosynth.data.ingest import FrameOptions, IngestOutput, IngestReport, name_problem
from sonosynth.data.manifest import Manifest
from sonosynth.data.sources import MEDIA_SUFFIXES, read_source
from sonosynth.errors import InputDataError
from sonosynth.progress import track

METADATA_FILENAME = "dataset_metadata.csv"
# Metadata `Label` values -> sonosynth class names.
LABELS = {"covid-19": "covid", "bacterial pneumonia": "pneumonia", "regular": "healthy", "viral pneumonia": "viral"}
# File-name prefixes used by the dataset, for files whose metadata row is missing or unlabelled.
PREFIXES = (("cov", "covid"), ("pneu", "pneumonia"), ("reg", "healthy"), ("vir", "viral"))
KNOWN_CLASSES = ("covid", "pneumonia", "healthy", "viral")


class PocusIngestOptions(FrameOptions):
    fps: float = Field(3.0, gt=0, le=120, description="frames per second sampled from clips (the study used 3 Hz)")
    classes: list[str] = Field(["covid", "pneumonia", "healthy"], description="classes to keep; add 'viral' to keep it")
    exclude_licenses: str | None = Field(
        None, description="regular expression; files whose License matches it are skipped (e.g. 'NC' drops non-commercial)"
    )
    probes: list[str] = Field(["convex"], description="probe sub-folders to read")
    max_frames: int | None = Field(
        None, ge=1, description="keep at most this many frames of each clip, the first ones at `fps` (Born et "
        "al.'s build_image_dataset.py: -max 30); unset: every sampled frame")

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, classes: list[str]) -> list[str]:
        unknown = sorted(set(classes) - set(KNOWN_CLASSES))
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; POCUS classes are {list(KNOWN_CLASSES)}")
        if not classes:
            raise ValueError("at least one class is needed")
        return classes

    @field_validator("exclude_licenses")
    @classmethod
    def _valid_pattern(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"--exclude-licenses is not a valid regular expression: {exc}") from exc
        return pattern


def read_metadata(source: Path) -> pd.DataFrame:
    """The metadata table indexed by file stem, with the columns this ingest uses."""
    path = source / METADATA_FILENAME
    if not path.is_file():
        raise InputDataError(f"{path} is missing; is {source} the POCUS data folder (with {METADATA_FILENAME})?")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputDataError(f"{path}: cannot be parsed as CSV ({exc}).") from exc
    needed = ["Filename", "Label", "License", "Patient ID / Name", "Framerate"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputDataError(f"{path}: missing column(s) {missing}; is this the POCUS dataset_metadata.csv?")
    table = table[needed].copy()
    table["Filename"] = table["Filename"].str.strip()
    return table[table["Filename"] != ""].drop_duplicates("Filename", keep="first").set_index("Filename")


def class_of(stem: str, row: pd.Series | None) -> str | None:
    """Class from the metadata label, else from the file-name prefix; None when neither says."""
    if row is not None:
        label = LABELS.get(str(row["Label"]).strip().lower())
        if label:
            return label
    lowered = stem.lower()
    for prefix, label in PREFIXES:
        if lowered.startswith(prefix):
            return label
    return None


def patient_of(stem: str, row: pd.Series | None) -> str:
    raw = "" if row is None else str(row["Patient ID / Name"]).strip()
    return f"pocus-{raw}" if raw else f"pocus-file-{stem}"


def _frame_rate(row: pd.Series | None) -> float | None:
    try:
        return float(row["Framerate"]) if row is not None else None
    except (TypeError, ValueError):
        return None


def list_media(source: Path, probes: list[str]) -> list[Path]:
    files: list[Path] = []
    for kind in ("pocus_images", "pocus_videos"):
        for probe in probes:
            folder = source / kind / probe
            if folder.is_dir():
                files.extend(sorted(p for p in folder.iterdir() if p.is_file()))
    return files


def ingest_pocus(source: str | os.PathLike, out: str | os.PathLike, options: PocusIngestOptions | None = None,
                 overwrite: bool = False, progress: bool = True) -> tuple[Manifest, IngestReport]:
    """Ingest the POCUS tree at `source` into frames + manifest at `out`."""
    options = options or PocusIngestOptions()
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputDataError(f"{source} is not a folder; point to the POCUS data folder (e.g. ../shared/data/pocus).")
    metadata = read_metadata(source)
    output = IngestOutput(out, "pocus", source, options, overwrite, sources=[source])
    if output.existing is not None:
        return output.result()
    report = output.report
    files = list_media(source, options.probes)
    if not files:
        raise InputDataError(f"no images or videos under {source}/pocus_images|pocus_videos/{'|'.join(options.probes)}.")
    license_filter = re.compile(options.exclude_licenses, re.IGNORECASE) if options.exclude_licenses else None
    with output.build() as writer:
        for path in track(files, "ingest pocus", enabled=progress):
            relative = path.relative_to(source).as_posix()
            if path.suffix.lower() not in MEDIA_SUFFIXES:
                report.skip(relative, f"not an image or video ({path.suffix or 'no extension'})")
                continue
            problem = name_problem(relative)
            if problem is not None:
                report.skip(relative, problem)
                continue
            row = metadata.loc[path.stem] if path.stem in metadata.index else None
            if row is None:
                report.notes["no metadata row: class from file name, own patient"] += 1
            label = class_of(path.stem, row)
            if label is None:
                shown = "no metadata row" if row is None else f"label {row['Label']!r}"
                report.skip(relative, f"unknown class ({shown}; known: {', '.join(LABELS)})")
                continue
            if label not in options.classes:
                report.skip(relative, f"class not requested ({label})")
                continue
            license = None if row is None else (str(row["License"]).strip() or None)
            if license_filter is not None and (license is None or license_filter.search(license)):
                report.skip(relative, f"licence excluded ({license or 'unknown'})")
                continue
            report.files_read += 1
            frames = read_source(path, options.fps, options, report, fallback_rate=_frame_rate(row), shown=relative)
            if frames is None:
                continue
            if options.max_frames is not None and len(frames) > options.max_frames:
                report.notes[f"clip capped at max_frames={options.max_frames}"] += 1
                frames = frames[: options.max_frames]
            writer.write(frames, label=label, patient_id=patient_of(path.stem, row), source=relative, license=license)
    return output.result()
