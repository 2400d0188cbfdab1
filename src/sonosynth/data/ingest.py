"""What every ingest source shares: frame preparation, the skip log, and the output-folder policy.

An ingest reads source files one at a time, turns each into one or more prepared frames
(grayscale, cropped to the ultrasound content, square, fixed size) and writes them as PNGs plus
a manifest. The output is built in a staging folder and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from sonosynth.atomic import staged_directory, write_text_atomic
from sonosynth.data.crop import content_box, to_square
from sonosynth.data.images import save_png
from sonosynth.data.manifest import MANIFEST_FILENAME, Manifest
from sonosynth.errors import InputDataError
from sonosynth.outputs import check_output_location, check_replaceable

INGEST_RECORD = "ingest.json"
SKIPPED_FILENAME = "skipped.csv"
MIN_SIDE = 16  # below this an image holds no usable ultrasound texture


class FrameOptions(BaseModel):
    """How every frame is prepared, whatever its source."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(256, ge=16, le=4096, description="side of the square output frames, in pixels")
    crop: bool = Field(True, description="crop to the ultrasound content before squaring")
    fit: Literal["pad", "stretch"] = Field(
        "pad", description="how a frame becomes square: pad (black borders, aspect kept) or stretch (resized "
                           "straight to size x size, as the fetal study's 128 x 128)")


def prepare_frames(frames: list[np.ndarray], options: FrameOptions) -> list[np.ndarray]:
    """Crop (one box for all frames of a clip, so the clip stays aligned) and square-resize."""
    if options.crop:
        box = content_box(np.mean(np.stack(frames), axis=0))
        frames = [box.apply(f) for f in frames]
    return [to_square(f, options.size, options.fit) for f in frames]


@dataclass
class IngestReport:
    """Counts for the summary table and the skip log; returned by every ingest."""

    files_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    cut_short: list[tuple[str, str]] = field(default_factory=list)  # (file, what is missing): clips kept in part
    notes: Counter = field(default_factory=Counter)  # non-fatal events, e.g. "smaller than 256 px, upscaled"
    reused: bool = False  # the output folder already held this exact ingest

    def skip(self, file: str | os.PathLike, reason: str) -> None:
        self.skipped.append((str(file), reason))

    def shortfall(self, file: str | os.PathLike, missing: str, kept: int) -> None:
        """A clip that ended before its container said: its frames are kept, the shortfall is listed."""
        self.cut_short.append((str(file), f"clip cut short: {missing}; {kept} frame(s) before the damage kept"))

    def log_rows(self) -> list[tuple[str, str]]:
        """Rows of skipped.csv: every skipped file, then every clip kept only in part."""
        return [*self.skipped, *self.cut_short]

    def skip_reasons(self) -> pd.Series:
        # The reason's text before any parenthesis groups alike skips (details stay in skipped.csv).
        return pd.Series([r.split(" (")[0] for _, r in self.skipped], dtype=str).value_counts()


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, which Python holds as lone surrogates
        return False
    return True


def name_problem(name: str) -> str | None:
    """Why a file or class name cannot stand in manifest.csv as it is, or None when it can."""
    if not _is_text(name):
        return "file name is not UTF-8 text; rename it"
    controls = sorted({f"\\x{ord(char):02x}" for char in name if ord(char) < 32})
    if controls:
        # A carriage return or newline in `source` would break tools that read the manifest line by line.
        return f"control character in the file name ({', '.join(controls)}); rename it"
    return None


# skipped.csv: one row per file; every cell is quoted, so a name holding a newline or a carriage return
# reads back as written. A name that is not UTF-8 cannot be stored as text at all: its `file` cell then
# holds the name's bytes in Python's escape notation (\xff; a backslash doubled), and `note` says so.
SKIP_COLUMNS = ["file", "reason", "note"]
ESCAPED_NAME_NOTE = "file name is not UTF-8: shown as its bytes with \\xNN escapes (a backslash doubled)"


def _escaped_name(name: str) -> str:
    return os.fsencode(name).decode("latin-1").encode("unicode_escape").decode("ascii")


def _unescaped_name(cell: str) -> str:
    return os.fsdecode(cell.encode("ascii").decode("unicode_escape").encode("latin-1"))


def write_skip_log(rows: Iterable[tuple[str, str]], path: str | os.PathLike) -> None:
    """Write skipped.csv so that every name, whatever characters or bytes it holds, reads back unchanged."""
    records = []
    for file, reason in rows:
        escaped = not _is_text(file)
        records.append({"file": _escaped_name(file) if escaped else file,
                        "reason": reason.encode("utf-8", "backslashreplace").decode("utf-8"),
                        "note": ESCAPED_NAME_NOTE if escaped else ""})
    pd.DataFrame(records, columns=SKIP_COLUMNS).to_csv(path, index=False, quoting=csv.QUOTE_ALL)


def read_skip_log(path: str | os.PathLike) -> pd.DataFrame:
    """skipped.csv as a table whose `file` column holds each name exactly as the file system has it."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "note" in table.columns:
        escaped = table["note"] == ESCAPED_NAME_NOTE
        table.loc[escaped, "file"] = [_unescaped_name(cell) for cell in table.loc[escaped, "file"]]
    return table


def safe_stem(name: str) -> str:
    """A file-name-safe, recognisable stem; the original name stays in the manifest's `source`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "file"


class FrameWriter:
    """Writes prepared frames under a staging folder and collects their manifest rows."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.rows: list[dict] = []
        self._used: set[str] = set()

    def write(self, frames: Iterable[tuple[int, np.ndarray]], *, label: str, patient_id: str,
              source: str, license: str | None = None, subset: str | None = None) -> int:
        source_name = Path(source).name
        stem = safe_stem(source_name)
        if stem in self._used:  # two sources that sanitise to the same name
            stem = f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:6]}"
        self._used.add(stem)
        count = 0
        for frame_index, image in frames:
            relative = f"frames/{safe_stem(label)}/{stem}_{frame_index:05d}.png"
            save_png(self.staging / relative, image)
            self.rows.append({
                "path": relative, "label": label, "patient_id": patient_id, "source": source,
                "frame_index": frame_index, "origin": "real", "license": license, "subset": subset,
            })
            count += 1
        return count


def fingerprint(kind: str, source: str | os.PathLike | None, options: BaseModel) -> dict:
    """What identifies an ingest: rerunning with the same fingerprint reuses the output folder.

    A source folder counts by its absolute path; a generated dataset (source None) by its options alone,
    so a rerun from another working folder finds it again.
    """
    values = options.model_dump(mode="json")
    # Options at the defaults they had before they existed are left out, so older ingests stay reusable.
    for name, default in (("fit", "pad"), ("max_frames", None)):
        if name in values and values[name] == default:
            del values[name]
    return {"kind": kind, "source": None if source is None else os.path.abspath(source), "options": values}


def reuse_or_check_output(out: Path, record: dict, overwrite: bool,
                          sources: Iterable[str | os.PathLike] = ()) -> Manifest | None:
    """Return the existing manifest if `out` holds this very ingest; refuse to mix datasets otherwise.

    `out` may not equal, contain or lie inside any of `sources` (the inputs), and --overwrite
    replaces only a folder sonosynth wrote; both are checked here, before any work.
    """
    check_output_location(out, sources)
    if overwrite:
        check_replaceable(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not out.is_dir():
        raise InputDataError(f"{out} is a file; give --out a folder path.")
    existing = out / INGEST_RECORD
    if existing.is_file() and (out / MANIFEST_FILENAME).is_file() and not overwrite:
        try:
            same = json.loads(existing.read_text())["fingerprint"] == record
        except (json.JSONDecodeError, KeyError):
            same = False
        if same:
            return Manifest.read(out)
    if overwrite:
        return None
    raise InputDataError(
        f"{out} already holds other files or a different dataset. Choose a new --out folder, "
        "or pass --overwrite to replace it (the old folder is kept until the new one is complete)."
    )


def finish_output(staging: Path, writer: FrameWriter, report: IngestReport, record: dict) -> Manifest:
    """Write manifest, skip log and ingest record into the staging folder."""
    if not writer.rows:
        reasons = "; ".join(f"{k}: {v}" for k, v in report.skip_reasons().items()) or "no input files found"
        raise InputDataError(f"nothing was ingested from {record['source'] or record['kind']} ({reasons}).")
    manifest = Manifest.from_rows(writer.rows, staging)
    manifest.write()
    write_skip_log(report.log_rows(), staging / SKIPPED_FILENAME)
    summary = {"fingerprint": record, "files_read": report.files_read, "frames": len(manifest),
               "skipped": len(report.skipped), "cut_short": len(report.cut_short), "notes": dict(report.notes)}
    write_text_atomic(staging / INGEST_RECORD, json.dumps(summary, indent=2))
    return manifest


class IngestOutput:
    """One ingest's output folder: reused when it already holds this very ingest, else built anew.

    `existing` is the reusable manifest (None when the ingest must run); `build()` yields a
    FrameWriter over a staging folder and, when its block ends, writes the manifest, the skip log
    and the ingest record there and moves the folder into place.
    """

    def __init__(self, out: str | os.PathLike, kind: str, source: str | os.PathLike | None, options: BaseModel,
                 overwrite: bool, sources: Iterable[str | os.PathLike] = ()) -> None:
        self.out = Path(out)
        self.record = fingerprint(kind, source, options)
        self.existing = reuse_or_check_output(self.out, self.record, overwrite, sources)
        self.report = IngestReport(reused=self.existing is not None)

    @contextlib.contextmanager
    def build(self) -> Iterator[FrameWriter]:
        with staged_directory(self.out) as staging:
            writer = FrameWriter(staging)
            yield writer
            finish_output(staging, writer, self.report, self.record)

    def result(self) -> tuple[Manifest, IngestReport]:
        return (self.existing if self.existing is not None else Manifest.read(self.out)), self.report


__all__ = [
    "MIN_SIDE",
    "FrameOptions",
    "FrameWriter",
    "IngestOutput",
    "IngestReport",
    "fingerprint",
    "finish_output",
    "name_problem",
    "prepare_frames",
    "read_skip_log",
    "reuse_or_check_output",
    "safe_stem",
    "staged_directory",
    "write_skip_log",
]
