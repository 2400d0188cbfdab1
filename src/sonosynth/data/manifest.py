"""The Manifest: the one table every stage reads and writes (see DESIGN.md).

One row per image file. Paths are stored relative to the manifest's own folder so that a
dataset folder can be moved or copied as a whole. Synthetic rows also record how they were
made (generator, checkpoint, seed, settings) and which real images they came from (parents),
so that leakage and memorization can be audited later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sonosynth.atomic import atomic_path
from sonosynth.errors import ManifestError

MANIFEST_FILENAME = "manifest.csv"

# Column -> pandas dtype. The order here is the order on disk.
COLUMNS: dict[str, str] = {
    "path": "string",  # relative to the manifest's folder
    "label": "string",
    "patient_id": "string",
    "source": "string",  # the original video/image file (or "phantom", or a generator run)
    "frame_index": "Int64",  # frame number in the source video; 0 for a still image
    "origin": "string",  # "real" | "synthetic"
    "license": "string",
    "subset": "string",  # the dataset's own split of the image (train | test) where it has one (FETAL_PLANES_DB)
    "generator": "string",  # synthetic rows: registry name of the generator
    "checkpoint": "string",  # synthetic rows: checkpoint the image was sampled from
    "seed": "Int64",  # synthetic rows: the per-image sampling seed
    "parents": "string",  # synthetic rows: JSON list of the training images, relative to this folder
    "settings": "string",  # synthetic rows: JSON of sampling settings (guidance, steps, size)
}
REQUIRED_COLUMNS = ("path", "label", "patient_id")
ORIGINS = ("real", "synthetic")
_MAX_LISTED = 5


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


@dataclass(frozen=True)
class Manifest:
    """A validated table of images plus the folder its relative paths start from."""

    table: pd.DataFrame
    root: Path

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, object]], root: str | os.PathLike) -> Manifest:
        """Build from dicts; absent optional columns are filled (origin defaults to real)."""
        table = pd.DataFrame(list(rows))
        return cls(_normalize(table, source="rows"), Path(root))

    @classmethod
    def read(cls, path: str | os.PathLike, check_files: bool = True) -> Manifest:
        """Read `manifest.csv` (or a folder holding one) and validate it."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILENAME
        if not path.is_file():
            raise ManifestError(
                f"{path}: no manifest here. Create one with `sonosynth ingest folder|pocus` or `sonosynth phantom`."
            )
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: not a readable CSV ({exc}).") from exc
        manifest = cls(_normalize(table, source=str(path)), path.parent)
        manifest.validate(check_files=check_files, where=str(path))
        return manifest

    # ----------------------------------------------------------------- persistence
    def write(self, path: str | os.PathLike | None = None) -> Path:
        """Write atomically. Writing into another folder rebases the relative paths onto it."""
        target = Path(path) if path is not None else self.root / MANIFEST_FILENAME
        if target.suffix.lower() != ".csv":
            target = target / MANIFEST_FILENAME
        manifest = self.rebased(target.parent)
        manifest.validate(check_files=False, where=str(target))
        with atomic_path(target) as tmp:
            manifest.table.to_csv(tmp, index=False)
        return target

    def rebased(self, new_root: str | os.PathLike) -> Manifest:
        """The same rows with paths (and parents) relative to `new_root`."""
        new_root = Path(new_root)
        if _same_dir(new_root, self.root):
            return self
        table = self.table.copy()
        table["path"] = [_relative(self.root / p, new_root) for p in table["path"]]
        table["parents"] = [
            pd.NA if pd.isna(v) else json.dumps([_relative(self.root / p, new_root) for p in json.loads(v)])
            for v in table["parents"]
        ]
        # A synthetic row's source and checkpoint are its checkpoint folder, relative to the manifest like `path`.
        synthetic = (table["origin"] == "synthetic").to_numpy()
        for column in ("source", "checkpoint"):
            table[column] = [_relative(self.root / v, new_root) if is_synthetic and not pd.isna(v) else v
                             for v, is_synthetic in zip(table[column], synthetic, strict=True)]
        return Manifest(table.astype(COLUMNS), new_root)

    # ----------------------------------------------------------------- validation
    def validate(self, check_files: bool = True, where: str | None = None) -> None:
        where = where or str(self.root / MANIFEST_FILENAME)
        t = self.table
        for column in REQUIRED_COLUMNS:
            empty = t.index[t[column].isna() | (t[column].str.strip() == "")].tolist()
            if empty:
                rows = [i + 2 for i in empty]  # +2: header line and 1-based numbering, as an editor shows it
                hint = (
                    " Give every image a patient ID (an image with no known patient can use its own file name)."
                    if column == "patient_id"
                    else ""
                )
                raise ManifestError(f"{where}: empty `{column}` on line(s) {_listing(rows)}.{hint}")
        bad_origin = sorted(set(t["origin"].dropna()) - set(ORIGINS))
        if bad_origin:
            raise ManifestError(f"{where}: unknown origin {bad_origin}; use one of {list(ORIGINS)}.")
        duplicated = t["path"][t["path"].duplicated()].tolist()
        if duplicated:
            raise ManifestError(f"{where}: duplicate paths: {_listing(duplicated)}. Each image may appear once.")
        synthetic_without_generator = t.index[(t["origin"] == "synthetic") & t["generator"].isna()].tolist()
        if synthetic_without_generator:
            rows = [i + 2 for i in synthetic_without_generator]
            raise ManifestError(f"{where}: synthetic rows without `generator` on line(s) {_listing(rows)}.")
        for value in t["parents"].dropna():
            try:
                parents = json.loads(value)
            except json.JSONDecodeError:
                parents = None
            if not isinstance(parents, list):
                raise ManifestError(f"{where}: `parents` must be a JSON list of paths, got {value!r}.")
        if check_files:
            missing = [p for p in t["path"] if not (self.root / p).is_file()]
            if missing:
                raise ManifestError(
                    f"{where}: {len(missing)} listed image(s) do not exist under {self.root}: {_listing(missing)}. "
                    "Was the folder moved without its images, or the manifest edited?"
                )

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.table)

    @property
    def labels(self) -> list[str]:
        return self.table["label"].tolist()

    @property
    def classes(self) -> list[str]:
        """Class names in sorted order: the canonical index order for classifiers."""
        return sorted(self.table["label"].unique().tolist())

    def absolute_paths(self) -> list[Path]:
        return [self.root / p for p in self.table["path"]]

    def parent_paths(self) -> list[list[Path]]:
        """For each row, the absolute paths of the real images it was made from (empty for real rows).

        A parent may be a manifest CSV instead of an image: a model trained on thousands of images (the
        guided generator) records its training manifest once rather than every image in every row. It is
        expanded here into the images it lists, so leakage guards and audits see the real parents.
        """
        expanded: dict[Path, list[Path]] = {}

        def images_of(path: Path) -> list[Path]:
            if path.suffix.lower() != ".csv":
                return [path]
            if path not in expanded:
                expanded[path] = Manifest.read(path, check_files=False).absolute_paths()
            return expanded[path]

        return [[] if pd.isna(v) else [image for p in json.loads(v) for image in images_of(self.root / p)]
                for v in self.table["parents"]]

    def where(self, mask: pd.Series | Sequence[bool]) -> Manifest:
        return Manifest(self.table[list(mask)].reset_index(drop=True), self.root)

    def with_labels(self, labels: Iterable[str]) -> Manifest:
        return self.where(self.table["label"].isin(list(labels)))

    def with_patients(self, patients: Iterable[str]) -> Manifest:
        return self.where(self.table["patient_id"].isin(list(patients)))

    def counts(self) -> pd.DataFrame:
        """Images and patients per class."""
        grouped = self.table.groupby("label")
        return pd.DataFrame({"images": grouped.size(), "patients": grouped["patient_id"].nunique()})


def concat(manifests: Sequence[Manifest], root: str | os.PathLike) -> Manifest:
    """Join manifests from different folders into one whose paths are relative to `root`."""
    if not manifests:
        return Manifest.from_rows([], root)
    tables = [m.rebased(root).table for m in manifests]
    return Manifest(pd.concat(tables, ignore_index=True).astype(COLUMNS), Path(root))


def encode_parents(parents: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """The `parents` cell for a synthetic row: training images relative to the manifest's folder."""
    return json.dumps([_relative(Path(p), Path(root)) for p in parents])


# ----------------------------------------------------------------------------- helpers
def _normalize(table: pd.DataFrame, source: str) -> pd.DataFrame:
    unknown = [c for c in table.columns if c not in COLUMNS]
    if unknown:
        raise ManifestError(f"{source}: unknown column(s) {unknown}; a manifest has only {list(COLUMNS)}.")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing and len(table):
        raise ManifestError(f"{source}: missing required column(s) {missing}.")
    table = table.reindex(columns=list(COLUMNS)).astype({c: "object" for c in COLUMNS})
    table["origin"] = table["origin"].fillna("real")
    for column in ("frame_index", "seed"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = table[column].notna() & values.isna()
        if bad.any():
            rows = [i + 2 for i in table.index[bad]]
            raise ManifestError(f"{source}: `{column}` is not a whole number on line(s) {_listing(rows)}.")
        table[column] = values
    return table.astype(COLUMNS).reset_index(drop=True)


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def _same_dir(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)
