"""Building a blinded study folder: draw real and synthetic images, copy them under opaque IDs.

Nothing a reader can see may reveal where an image came from: not the file name (a random ID),
not the path, not metadata (every image is decoded and re-encoded from bare pixels, so no text,
EXIF, ICC or timestamp chunk survives), not the size or mode (all images are brought to one
square size and one colour mode), not the file times (all set to one instant). The truth lives
only in the study database.

Real images are drawn from the labels the synthetic images have, so a reader cannot tell a
synthetic pneumonia frame from a real healthy one by the pathology alone.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from sonosynth.atomic import atomic_path, staged_directory
from sonosynth.config import StrictModel
from sonosynth.data.manifest import Manifest
from sonosynth.errors import InputDataError, SonosynthError
from sonosynth.outputs import check_output_location, check_replaceable
from sonosynth.progress import track
from sonosynth.reader_study.store import (
    DATABASE_FILENAME,
    IMAGES_DIRNAME,
    KeyRow,
    create_database,
    new_image_id,
)

# Every study image carries this modification time, so file times cannot order real before synthetic.
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z


class StudyOptions(StrictModel):
    per_generator: int = Field(32, ge=1, description="synthetic images drawn per generator")
    real_count: int = Field(32, ge=0, description="real images drawn")
    seed: int = Field(0, description="seed of the draw; the same seed draws the same images")
    size: int | None = Field(None, ge=16, le=4096, description="side of the square study images; "
                             "default: the smallest long side among the drawn images (nothing is upscaled past it)")
    match_labels: bool = Field(True, description="draw real images only from the labels of the synthetic images")


@dataclass(frozen=True)
class SyntheticInput:
    """One SyntheticSet; `group` names its images in the results (default: the rows' `generator`)."""

    manifest: Manifest
    group: str | None = None


@dataclass(frozen=True)
class StudySummary:
    study_dir: Path
    counts: pd.DataFrame  # group, origin, images, original sizes
    size: int
    mode: str


@dataclass(frozen=True)
class _Drawn:
    path: Path
    origin: str
    group: str | None
    label: str | None
    patient_id: str | None


# ----------------------------------------------------------------------------- drawing
def _group_rng(seed: int, group: str) -> np.random.Generator:
    # One stream per group: adding a generator to a study does not change what the others drew.
    return np.random.default_rng([seed, zlib.crc32(group.encode("utf-8"))])


def _draw(rows: list[_Drawn], n: int, seed: int, group: str) -> list[_Drawn]:
    rows = sorted(rows, key=lambda r: str(r.path))  # independent of manifest row order
    chosen = _group_rng(seed, group).choice(len(rows), size=n, replace=False)
    return [rows[i] for i in sorted(chosen)]


def _synthetic_rows(inputs: Sequence[SyntheticInput]) -> dict[str, list[_Drawn]]:
    groups: dict[str, list[_Drawn]] = {}
    for source in inputs:
        table = source.manifest.table
        synthetic = table["origin"] == "synthetic"
        if not synthetic.any():
            raise InputDataError(
                f"{source.manifest.root}: the manifest holds no synthetic rows (origin=synthetic). "
                "Pass a SyntheticSet written by `sonosynth generate ...` to --synthetic."
            )
        for path, row in zip(source.manifest.absolute_paths(), table.itertuples(index=False), strict=True):
            if row.origin != "synthetic":
                continue
            group = source.group or row.generator
            if group == "real":
                raise InputDataError(
                    f"{source.manifest.root}: a synthetic group may not be called 'real'; name it with NAME=PATH."
                )
            groups.setdefault(group, []).append(
                _Drawn(path, "synthetic", group, _text(row.label), _text(row.patient_id))
            )
    return groups


def _real_rows(real: Manifest, labels: set[str] | None) -> list[_Drawn]:
    table = real.table
    rows = [
        _Drawn(path, "real", None, _text(row.label), _text(row.patient_id))
        for path, row in zip(real.absolute_paths(), table.itertuples(index=False), strict=True)
        if row.origin == "real" and (labels is None or row.label in labels)
    ]
    return rows


def _text(value: object) -> str | None:
    return None if pd.isna(value) else str(value)


def draw_images(real: Manifest, synthetic: Sequence[SyntheticInput], options: StudyOptions) -> list[_Drawn]:
    """The seeded draw: `per_generator` synthetic images per group plus `real_count` real ones."""
    if not synthetic:
        raise InputDataError("no synthetic sets given: pass at least one --synthetic SYNTH_MANIFEST.")
    groups = _synthetic_rows(synthetic)
    drawn: list[_Drawn] = []
    for group in sorted(groups):
        pool = groups[group]
        if len(pool) < options.per_generator:
            raise InputDataError(
                f"generator {group!r} has {len(pool)} synthetic image(s), fewer than --per-generator "
                f"{options.per_generator}. Generate more images or lower --per-generator."
            )
        drawn += _draw(pool, options.per_generator, options.seed, f"synthetic/{group}")
    labels = {d.label for d in drawn if d.label is not None} if options.match_labels else None
    pool = _real_rows(real, labels)
    if len(pool) < options.real_count:
        which = f" with label(s) {sorted(labels)}" if labels else ""
        raise InputDataError(
            f"{real.root}: {len(pool)} real image(s){which}, fewer than --real-count {options.real_count}. "
            "Lower --real-count" + (" or pass --no-match-labels." if labels else ".")
        )
    drawn += _draw(pool, options.real_count, options.seed, "real")
    return drawn


# ----------------------------------------------------------------------------- images
def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise InputDataError(f"{path}: cannot read this image ({exc}). Check the manifest that lists it.") from exc


def _is_colour(image: Image.Image) -> bool:
    if image.mode not in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return False
    channels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool(np.any(channels[..., 0] != channels[..., 1]) or np.any(channels[..., 1] != channels[..., 2]))


def _normalized(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Bare pixels in one mode and one square size; a fresh image, so no metadata is carried over."""
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from sonosynth.data.images import pil_to_grayscale

        image = Image.fromarray(pil_to_grayscale(image))
    image = image.convert(mode)
    if image.size != (size, size):
        # Pad to square with black (the ultrasound background) instead of stretching.
        image = ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=0)
    return Image.fromarray(np.asarray(image).copy())


def _write_png(path: Path, image: Image.Image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


# ----------------------------------------------------------------------------- the study
def create_study(real: Manifest, synthetic: Sequence[SyntheticInput], out: str | os.PathLike,
                 options: StudyOptions | None = None, overwrite: bool = False,
                 progress: bool = True) -> StudySummary:
    """Draw the images, write them under opaque IDs into `out/images/`, and the key into `out/study.sqlite`."""
    options = options or StudyOptions()
    out = Path(out)
    check_output_location(out, [real.root, *(s.manifest.root for s in synthetic)])
    if overwrite:
        check_replaceable(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "a reader study (with its answers)" if (out / DATABASE_FILENAME).exists() else "other files"
        raise SonosynthError(f"{out}: the folder already holds {what}. Choose a new --out, or pass --overwrite.")
    drawn = draw_images(real, synthetic, options)
    images = [_open(d.path) for d in track(drawn, "read drawn images", enabled=progress)]
    size = options.size or min(max(image.size) for image in images)
    mode = "RGB" if any(_is_colour(image) for image in images) else "L"
    ids = _unique_ids(len(drawn))
    key = [
        KeyRow(image_id, d.origin, d.group, d.label, d.patient_id, str(d.path.resolve()))
        for image_id, d in zip(ids, drawn, strict=True)
    ]
    with staged_directory(out) as staging:
        (staging / IMAGES_DIRNAME).mkdir()
        # Written in ID order, so neither the write order nor anything else on disk follows the origin.
        for row, image in track(sorted(zip(key, images, strict=True), key=lambda p: p[0].image_id),
                                "write study images", enabled=progress):
            _write_png(staging / IMAGES_DIRNAME / f"{row.image_id}.png", _normalized(image, size, mode))
        meta = {"seed": str(options.seed), "size": str(size), "mode": mode,
                "options": options.model_dump_json()}
        create_database(staging / DATABASE_FILENAME, key, meta)
    return StudySummary(out, _counts(key, images), size, mode)


def _counts(key: Sequence[KeyRow], images: Sequence[Image.Image]) -> pd.DataFrame:
    """Images per group, with the sizes they had before being brought to the study size."""
    table = pd.DataFrame([{"group": r.generator or "real", "origin": r.origin, "size": f"{i.width}x{i.height}"}
                          for r, i in zip(key, images, strict=True)])
    grouped = table.groupby(["group", "origin"])
    return pd.DataFrame({
        "images": grouped.size(),
        "original sizes": grouped["size"].agg(lambda sizes: ", ".join(sorted(set(sizes)))),
    }).reset_index()


def _unique_ids(n: int) -> list[str]:
    # Kept in the random order they were drawn: sorting them would give the first groups the lowest IDs.
    ids: list[str] = []
    while len(ids) < n:
        candidate = new_image_id()
        if candidate not in ids:
            ids.append(candidate)
    return ids


__all__ = ["StudyOptions", "StudySummary", "SyntheticInput", "create_study", "draw_images"]
