"""Listing a dataset: CSV entries absolute or relative, symlinked folders, and links that cannot be followed."""

from __future__ import annotations

import os

import pandas as pd
from tests.media import write_image

from sonosynth.data.folder import FolderIngestOptions, ingest_folder

SMALL = FolderIngestOptions(size=32)


def test_csv_entries_may_be_absolute_or_relative_from_any_working_folder(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        write_image(images / name, "L")
    listing = tmp_path / "lists" / "study.csv"
    listing.parent.mkdir()
    listing.write_text("path,label,patient_id\n"
                       f"{images / 'a.png'},covid,p1\n"  # absolute
                       "../images/b.png,covid,p2\n"  # relative to the CSV's folder
                       f"{images / 'missing.png'},covid,p3\n")
    monkeypatch.chdir(tmp_path)
    for given in (listing, listing.relative_to(tmp_path)):  # the CSV named absolutely and relatively
        out = tmp_path / f"out-{given.is_absolute()}"
        manifest, report = ingest_folder(given, out, SMALL, progress=False)
        assert sorted(manifest.table["patient_id"]) == ["p1", "p2"]
        assert report.skipped == [(str(images / "missing.png"), "file not found")]
        assert set(manifest.table["source"]) == {str(images / "a.png"), "../images/b.png"}


def test_symlink_loops_and_broken_links_are_listed_in_the_skip_log(tmp_path):
    source = tmp_path / "src"
    (source / "a" / "deeper").mkdir(parents=True)
    write_image(source / "a" / "one.png", "L")
    write_image(source / "a" / "deeper" / "two.png", "L")
    (source / "a" / "deeper" / "up").symlink_to(source / "a")  # a folder loop
    (source / "a" / "self.png").symlink_to(source / "a" / "self.png")  # a link to itself
    (source / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    shared = tmp_path / "shared"
    shared.mkdir()
    write_image(shared / "three.png", "L")
    (source / "a" / "linked").symlink_to(shared)  # a symlinked folder is read, once
    manifest, report = ingest_folder(source, tmp_path / "out", SMALL, progress=False)
    assert sorted(manifest.table["source"]) == ["a/deeper/two.png", "a/linked/three.png", "a/one.png"]
    skipped = dict(report.skipped)
    assert skipped["a/deeper/up"].startswith("symlink loop")
    assert skipped["a/self.png"] == "symlink loop"
    assert skipped["a/gone.png"].startswith("broken symlink")
    log = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert set(log["file"]) == {"a/deeper/up", "a/self.png", "a/gone.png"}
    assert os.path.islink(source / "a" / "deeper" / "up")  # nothing of the source was touched
