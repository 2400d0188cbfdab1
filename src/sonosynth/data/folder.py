"""Ingest of any dataset laid out as class sub-folders, or listed in a CSV (`path,label[,patient_id]`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import Field, field_validator

from sonosynth.data.ingest import FrameOptions, IngestOutput, IngestReport, name_problem
from sonosynth.data.manifest import Manifest
from sonosynth.data.sources import MEDIA_SUFFIXES, read_source
from sonosynth.errors import InputDataError
from sonosynth.progress import track


class FolderIngestOptions(FrameOptions):
    fps: float = Field(3.0, gt=0, le=120, description="frames per second sampled from any clips")
    classes: list[str] | None = Field(None, description="labels to keep (default: all found); others are skipped")
    patient_id_regex: str | None = Field(
        None, description="regular expression on the file name whose first group (or group `patient`) is the "
        "patient ID, e.g. '^(p\\d+)_' for p017_clip2.mp4; a CSV's patient_id column takes precedence")

    @field_validator("patient_id_regex")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
            if compiled.groups == 0:
                raise ValueError("needs a group, e.g. '^(p\\d+)_', whose text is the patient ID")
        return pattern


def patient_from_name(name: str, pattern: str) -> str | None:
    """The patient ID in a file name by `pattern` (its `patient` group, else its first group), or None."""
    match = re.search(pattern, name)
    if match is None:
        return None
    return match.groupdict().get("patient") or match.group(1)


@dataclass(frozen=True)
class Entry:
    """One listed source file: where it is, how the logs name it, its label and patient, or why it is unusable."""

    path: Path
    shown: str  # as the user knows it: relative to the class-folder tree, or as written in the CSV
    label: str
    patient: str | None = None
    problem: str | None = None  # set for an entry that can only be logged as skipped


def _symlink_problem(path: Path) -> str | None:
    """Why a symlink cannot be followed (a loop or a dangling link), or None when it can."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return f"broken symlink (points to {os.readlink(path)})"
    except (RuntimeError, OSError):  # Python raises RuntimeError (3.11, 3.12) or OSError (3.13+) on a loop
        return "symlink loop"
    return None


def _walk_class_folder(source: Path, class_dir: Path, label: str) -> list[Entry]:
    """Every file under `class_dir`, following symlinked folders once each; loops are listed, not followed."""
    entries: list[Entry] = []
    seen: set[Path] = set()

    def visit(folder: Path) -> None:
        seen.add(folder.resolve())
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            shown = path.relative_to(source).as_posix()
            problem = _symlink_problem(path)
            if problem is None and path.is_dir():
                if path.resolve() in seen:
                    problem = f"symlink loop (leads back to {path.resolve()})"
                else:
                    visit(path)
                    continue
            if problem is not None or path.is_file():
                entries.append(Entry(path, shown, label, problem=problem))

    visit(class_dir)
    return entries


def _entries_from_tree(source: Path) -> list[Entry]:
    entries: list[Entry] = []
    for child in sorted(source.iterdir()):
        if child.name.startswith("."):
            continue
        problem = _symlink_problem(child)
        if problem is not None:
            entries.append(Entry(child, child.name, child.name, problem=problem))
        elif child.is_dir():
            entries.extend(_walk_class_folder(source, child, child.name))
    return entries


def _entries_from_csv(csv_path: Path) -> list[Entry]:
    """Rows of a CSV listing; a relative `path` is relative to the CSV's folder, an absolute one is used as is."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputDataError(f"{csv_path}: cannot be parsed as CSV ({exc}).") from exc
    missing = [c for c in ("path", "label") if c not in table.columns]
    if missing:
        raise InputDataError(f"{csv_path}: needs columns path,label[,patient_id]; missing {missing}.")
    base = csv_path.parent
    entries = []
    for _, row in table.iterrows():
        written = row["path"].strip()
        path = Path(written).expanduser()
        entries.append(Entry(path if path.is_absolute() else base / path, written, row["label"].strip(),
                             (row.get("patient_id") or "").strip() or None,
                             problem=None if written else "empty path"))
    return entries


def ingest_folder(source: str | os.PathLike, out: str | os.PathLike, options: FolderIngestOptions | None = None,
                  overwrite: bool = False, progress: bool = True) -> tuple[Manifest, IngestReport]:
    """Ingest class sub-folders (SRC/<label>/...) or a CSV listing into frames + manifest at `out`.

    Without patient IDs every file is its own patient, which is only safe when no two files show
    the same patient; the report notes it so the user can add a `patient_id` column.
    """
    options = options or FolderIngestOptions()
    source, out = Path(source), Path(out)
    if source.is_file() and source.suffix.lower() == ".csv":
        entries = _entries_from_csv(source)
    elif source.is_dir():
        entries = _entries_from_tree(source)
    else:
        raise InputDataError(f"{source}: give a folder with one sub-folder per class, or a CSV with path,label.")
    if not entries:
        raise InputDataError(f"{source}: no class sub-folders with files found.")
    output = IngestOutput(out, "folder", source, options, overwrite, sources=[source, *(e.path for e in entries)])
    if output.existing is not None:
        return output.result()
    report = output.report
    with output.build() as writer:
        for entry in track(entries, "ingest folder", enabled=progress):
            path, shown, label = entry.path, entry.shown, entry.label
            if entry.problem is not None:
                report.skip(shown, entry.problem)
                continue
            if not label:
                report.skip(shown, "empty label")
                continue
            if options.classes is not None and label not in options.classes:
                report.skip(shown, f"class not requested ({label})")
                continue
            if not path.is_file():
                report.skip(shown, "file not found")
                continue
            if path.suffix.lower() not in MEDIA_SUFFIXES:
                report.skip(shown, f"not an image or video ({path.suffix or 'no extension'})")
                continue
            problem = name_problem(shown) or name_problem(label)
            if problem is not None:
                report.skip(shown, problem)
                continue
            report.files_read += 1
            frames = read_source(path, options.fps, options, report, shown=shown)
            if frames is None:
                continue
            patient = entry.patient
            if patient is None and options.patient_id_regex:
                patient = patient_from_name(path.name, options.patient_id_regex)
                if patient is None:
                    report.notes["patient-ID pattern did not match the file name"] += 1
            if patient is None:
                report.notes["no patient ID: file is its own patient"] += 1
            writer.write(frames, label=label, patient_id=patient or f"file-{shown}", source=shown)
    return output.result()
