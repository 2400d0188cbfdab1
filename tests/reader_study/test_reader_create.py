"""Creating a study: the right counts, nothing that reveals an image's origin, the same draw for the same seed."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import struct

import numpy as np
import pytest
from PIL import Image

from sonosynth.errors import SonosynthError
from sonosynth.outputs import OUTPUT_MARKER
from sonosynth.reader_study.create import StudyOptions, SyntheticInput, create_study, draw_images
from sonosynth.reader_study.store import StudyStore
from tests.reader_study.study_helpers import GENERATORS, make_study, write_synthetic_set


def png_chunks(path) -> list[str]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        chunks.append(data[offset + 4:offset + 8].decode("ascii"))
        offset += 12 + length
    return chunks


def key_of(study) -> list[tuple[str, str, str]]:
    key = StudyStore(study).key()
    return sorted(zip(key["origin"], key["generator"].fillna("real"), key["source"], strict=True))


def pixel_hashes(study) -> list[str]:
    return sorted(hashlib.sha1(np.asarray(Image.open(p)).tobytes()).hexdigest() for p in (study / "images").iterdir())


def test_counts_per_generator_and_real(study_dir, study_options):
    key = StudyStore(study_dir).key()
    counts = key.fillna({"generator": "real"}).groupby("generator").size().to_dict()
    assert counts == {GENERATORS[0]: 4, GENERATORS[1]: 4, "real": 5}
    assert set(key["origin"]) == {"real", "synthetic"}
    # Real images come from the synthetic images' label only, so pathology cannot give the answer away.
    assert set(key["label"]) == {"pneumonia"}
    assert len(list((study_dir / "images").iterdir())) == 13


def test_nothing_on_disk_reveals_the_origin(study_dir, phantom_manifest, synthetic_sets):
    files = sorted(os.listdir(study_dir))
    assert files == [OUTPUT_MARKER, "images", "study.sqlite"]  # the marker says only "sonosynth wrote this"
    marker = (study_dir / OUTPUT_MARKER).read_text().replace("sonosynth", "")
    assert "real" not in marker and "synth" not in marker
    images = sorted((study_dir / "images").iterdir())
    sources = [p.name for m in [phantom_manifest, *synthetic_sets] for p in m.absolute_paths()]
    sizes, modes, mtimes = set(), set(), set()
    for path in images:
        assert re.fullmatch(r"[0-9a-f]{16}\.png", path.name)
        # Only the pixel chunks: no text, EXIF, ICC, time or physical-size chunk survives re-encoding.
        assert png_chunks(path) == ["IHDR", "IDAT", "IEND"]
        content = path.read_bytes()
        assert not any(word.encode() in content for word in ("fake", "synthetic", "real", "phantom", "pneumonia"))
        assert not any(source.encode() in content for source in sources)
        with Image.open(path) as image:
            sizes.add(image.size)
            modes.add(image.mode)
        mtimes.add(path.stat().st_mtime)
    # Real frames are 64 px and synthetic ones 48 px: all become 48 x 48 grayscale, with one file time.
    assert sizes == {(48, 48)} and modes == {"L"} and len(mtimes) == 1


def test_ids_do_not_follow_the_origin(tmp_path, phantom_manifest, synthetic_sets, study_options):
    # Across several studies the lowest IDs are not always the first group drawn (they once were).
    firsts = set()
    for index in range(4):
        key = StudyStore(make_study(phantom_manifest, synthetic_sets, tmp_path / f"s{index}", study_options)).key()
        firsts.add(tuple(key.sort_values("image_id")["origin"].head(4)))
    assert len(firsts) > 1


def test_same_seed_same_draw_other_seed_other_draw(tmp_path, phantom_manifest, synthetic_sets, study_options):
    first = make_study(phantom_manifest, synthetic_sets, tmp_path / "a", study_options)
    again = make_study(phantom_manifest, list(reversed(synthetic_sets)), tmp_path / "b", study_options)
    other = make_study(phantom_manifest, synthetic_sets, tmp_path / "c", study_options.model_copy(update={"seed": 1}))
    assert key_of(first) == key_of(again)
    assert pixel_hashes(first) == pixel_hashes(again)
    assert key_of(first) != key_of(other)


def test_adding_a_generator_keeps_the_other_draws(phantom_manifest, synthetic_sets, study_options):
    alone = draw_images(phantom_manifest, [SyntheticInput(synthetic_sets[0])], study_options)
    together = draw_images(phantom_manifest, [SyntheticInput(m) for m in synthetic_sets], study_options)
    assert {d.path for d in alone} <= {d.path for d in together}


def test_named_sets_and_colour_images(tmp_path, phantom_manifest, synthetic_sets):
    # One colour synthetic image makes the whole study RGB, so mode cannot tell the groups apart.
    colour = write_synthetic_set(synthetic_sets[1], tmp_path / "colour", "raw", 6)
    path = colour.absolute_paths()[0]
    gray = np.asarray(Image.open(path))
    Image.fromarray(np.stack([gray, gray // 2, gray], axis=-1)).save(path)
    options = StudyOptions(per_generator=6, real_count=2, seed=0, size=40)
    create_study(phantom_manifest, [SyntheticInput(colour, "fewddm")], tmp_path / "s", options, progress=False)
    key = StudyStore(tmp_path / "s").key()
    assert set(key["generator"].dropna()) == {"fewddm"}
    for image in (tmp_path / "s" / "images").iterdir():
        with Image.open(image) as opened:
            assert opened.mode == "RGB" and opened.size == (40, 40)


def test_refuses_bad_requests(tmp_path, phantom_manifest, synthetic_sets, study_options):
    with pytest.raises(SonosynthError, match="fewer than --per-generator"):
        create_study(phantom_manifest, [SyntheticInput(synthetic_sets[0])], tmp_path / "x",
                     StudyOptions(per_generator=7), progress=False)
    with pytest.raises(SonosynthError, match="no synthetic rows"):
        create_study(phantom_manifest, [SyntheticInput(phantom_manifest)], tmp_path / "x", study_options,
                     progress=False)
    with pytest.raises(SonosynthError, match="fewer than --real-count"):
        create_study(phantom_manifest, [SyntheticInput(synthetic_sets[0])], tmp_path / "x",
                     StudyOptions(per_generator=2, real_count=10), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SonosynthError, match="--overwrite"):
        create_study(phantom_manifest, [SyntheticInput(synthetic_sets[0])], tmp_path / "busy", study_options,
                     progress=False)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_not_a_study_is_refused(tmp_path, study_dir):
    with pytest.raises(SonosynthError, match="no such folder"):
        StudyStore(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SonosynthError, match="not a reader study"):
        StudyStore(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "study.sqlite").write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(SonosynthError, match="not a reader-study database"):
        StudyStore(tmp_path / "junk")
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "study.sqlite") as connection:
        connection.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    with pytest.raises(SonosynthError, match="not a reader-study database"):
        StudyStore(other)
    next((study_dir / "images").iterdir()).unlink()
    with pytest.raises(SonosynthError, match="missing"):
        StudyStore(study_dir)

