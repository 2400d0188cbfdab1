"""Property-based ingest: whatever a file holds and whatever it is called, it ends as frames or as a listed skip.

Hypothesis draws random bytes under media suffixes, random images (shape, mode, bit depth, format)
and random file names (any characters, control characters included, or bytes that are not UTF-8);
each case is ingested beside one known-good image, and the drawn file must
then be either a source of frames in the manifest or a row of skipped.csv, and never a traceback.
Names starting with "." are hidden files, which the ingest ignores by design, so they are not drawn.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from tests.media import write_image

from sonosynth.data.folder import FolderIngestOptions, ingest_folder
from sonosynth.data.ingest import read_skip_log
from sonosynth.data.sources import MEDIA_SUFFIXES

OPTIONS = FolderIngestOptions(size=32)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ingest_one(write) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """Ingest a class folder holding one good image and the file `write(folder)` makes; return its name and logs."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "src" / "label"
        folder.mkdir(parents=True)
        write_image(folder / "anchor-good.png", "L")
        name = write(folder)
        manifest, _ = ingest_folder(root / "src", root / "out", OPTIONS, progress=False)
        skipped = read_skip_log(root / "out" / "skipped.csv")
        # Every written frame is a readable PNG of the asked size.
        for path in manifest.absolute_paths():
            with Image.open(path) as frame:
                assert frame.size == (OPTIONS.size, OPTIONS.size)
        return f"label/{name}", manifest.table.copy(), skipped


def assert_frame_or_skip(shown: str, table: pd.DataFrame, skipped: pd.DataFrame) -> None:
    written = shown in set(table["source"])
    listed = shown in set(skipped["file"])
    assert written or listed, f"{shown!r}: neither written nor listed as skipped"
    if listed and not written:
        assert skipped.loc[skipped["file"] == shown, "reason"].str.len().min() > 0


@PROPERTY
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([*MEDIA_SUFFIXES, ".txt", ""]))
def test_random_bytes_end_as_frames_or_a_listed_skip(data, suffix):
    def write(folder: Path) -> str:
        (folder / f"random{suffix}").write_bytes(data)
        return f"random{suffix}"

    assert_frame_or_skip(*ingest_one(write))


# (mode, numpy dtype, value range) of the pixel data Pillow is asked to store.
MODES = {
    "L": (np.uint8, 255), "LA": (np.uint8, 255), "RGB": (np.uint8, 255), "RGBA": (np.uint8, 255),
    "P": (np.uint8, 255), "1": (np.uint8, 1), "I;16": (np.uint16, 65535), "I": (np.int32, 2**20),
    "F": (np.float32, 1.0), "CMYK": (np.uint8, 255),
}
FORMATS = {".png": "PNG", ".tif": "TIFF", ".bmp": "BMP", ".jpg": "JPEG", ".webp": "WEBP", ".gif": "GIF"}


@PROPERTY
@given(mode=st.sampled_from(sorted(MODES)), suffix=st.sampled_from(sorted(FORMATS)),
       height=st.integers(1, 300), width=st.integers(1, 300), seed=st.integers(0, 2**16),
       constant=st.booleans())
def test_random_images_of_any_mode_depth_and_shape_end_as_frames_or_a_listed_skip(
        mode, suffix, height, width, seed, constant):
    dtype, top = MODES[mode]
    channels = {"LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 3}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    pixels = np.zeros(shape) if constant else np.random.default_rng(seed).uniform(0, top, shape)
    if mode in ("P", "1", "CMYK"):  # drawn as 8-bit gray or RGB, then converted by Pillow
        image = Image.fromarray((pixels * (255 if mode == "1" else 1)).astype(np.uint8)).convert(mode)
    else:  # the array's dtype and channels give the mode: uint16 -> I;16, int32 -> I, float32 -> F, ...
        image = Image.fromarray(pixels.astype(dtype))
    assert image.mode == mode

    def write(folder: Path) -> str:
        path = folder / f"image{suffix}"
        try:
            image.save(path, format=FORMATS[suffix])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            assume(False)  # Pillow cannot store this mode in this format; nothing to ingest
        return path.name

    assert_frame_or_skip(*ingest_one(write))


# Any character a Linux file name may hold ("/" separates, NUL ends it); surrogates are drawn as bytes below.
NAME_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


def assert_named_file_ends_as_frames_or_a_listed_skip(name: str) -> None:
    assume(not name.startswith("."))
    assume(len(os.fsencode(name)) <= 200)

    def write(folder: Path) -> str:
        try:
            write_image(folder / name, "RGB")
        except (OSError, ValueError):
            assume(False)  # a name this file system refuses
        return name

    shown, table, skipped = ingest_one(write)
    assert_frame_or_skip(shown, table, skipped)
    # A name that shares the anchor's sanitised stem still gets its own frame files.
    assert table["path"].is_unique


@PROPERTY
@given(stem=st.text(NAME_CHARACTERS, min_size=1, max_size=40), suffix=st.sampled_from([".png", ".PNG", ".jpg"]))
def test_random_file_names_end_as_frames_or_a_listed_skip(stem, suffix):
    assert_named_file_ends_as_frames_or_a_listed_skip(f"{stem}{suffix}")


@PROPERTY
@given(stem=st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\x00" not in b))
def test_file_names_that_are_not_utf8_end_as_frames_or_a_listed_skip(stem):
    # Python holds such a name with surrogates in place of the bytes (os.fsdecode); skipped.csv must still list it.
    assert_named_file_ends_as_frames_or_a_listed_skip(os.fsdecode(stem + b".png"))


def test_names_with_control_characters_or_foreign_bytes_read_back_from_the_skip_log(tmp_path):
    """The cases the properties above may not draw every run: CR, LF, a non-UTF-8 byte, a backslash."""
    folder = tmp_path / "src" / "label"
    folder.mkdir(parents=True)
    names = ["cr\rname.png", "lf\nname.png", "tab\tname.png", os.fsdecode(b"latin-\xe9\\x41.png")]
    for name in ["good.png", *names]:
        write_image(folder / name, "L")
    manifest, report = ingest_folder(tmp_path / "src", tmp_path / "out", OPTIONS, progress=False)
    assert list(manifest.table["source"]) == ["label/good.png"]
    skipped = read_skip_log(tmp_path / "out" / "skipped.csv")
    assert sorted(skipped["file"]) == sorted(f"label/{name}" for name in names)
    assert sorted(skipped["file"]) == sorted(file for file, _ in report.skipped)
