"""Output-folder safety: no command writes over, around or into its inputs, or deletes what it did not write."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sonosynth.atomic import remove_stale_staging, staged_directory
from sonosynth.cli import app
from sonosynth.data.folder import FolderIngestOptions, ingest_folder
from sonosynth.data.phantom_dataset import PhantomOptions, make_phantom_dataset
from sonosynth.outputs import (
    OUTPUT_MARKER,
    OutputLocationError,
    check_output_location,
    is_marked,
    removed_on_failure,
)
from tests.media import write_image

SMALL = FolderIngestOptions(size=32)


def _tree(root):
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(2):
            write_image(root / label / f"{label}{i}.png", "L")
    return root


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("where", ["same", "inside", "parent", "symlink-inside"])
def test_ingest_refuses_an_output_on_or_around_the_source(tmp_path, where):
    source = _tree(tmp_path / "src")
    before = _files(source)
    (tmp_path / "link").symlink_to(source)
    out = {"same": source, "inside": source / "frames", "parent": tmp_path,
           "symlink-inside": tmp_path / "link" / "frames"}[where]
    with pytest.raises(OutputLocationError, match="input"):
        ingest_folder(source, out, SMALL, overwrite=True, progress=False)
    assert _files(source) == before


def test_overwrite_replaces_only_folders_sonosynth_wrote(tmp_path):
    source = _tree(tmp_path / "src")
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(OutputLocationError, match="did not write"):
        ingest_folder(source, foreign, SMALL, overwrite=True, progress=False)
    assert (foreign / "holiday.jpg").read_bytes() == b"mine"
    out = tmp_path / "frames"
    ingest_folder(source, out, SMALL, progress=False)
    assert is_marked(out)
    manifest, report = ingest_folder(source, out, FolderIngestOptions(size=48), overwrite=True, progress=False)
    assert not report.reused and len(manifest) == 4 and is_marked(out)
    with pytest.raises(OutputLocationError, match="did not write"):
        make_phantom_dataset(foreign, PhantomOptions(size=32, frames=1), overwrite=True, progress=False)


def test_the_same_rule_holds_for_csv_listings_and_their_entries(tmp_path):
    source = _tree(tmp_path / "data" / "src")
    listing = tmp_path / "lists" / "list.csv"
    listing.parent.mkdir()
    listing.write_text(f"path,label\n{source / 'a' / 'a0.png'},a\n")
    with pytest.raises(OutputLocationError, match="contains the input"):
        ingest_folder(listing, tmp_path / "data", SMALL, overwrite=True, progress=False)


def test_check_ignores_inputs_that_do_not_exist_and_manifests_stand_for_their_folder(tmp_path):
    check_output_location(tmp_path / "out", [None, tmp_path / "missing"])
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "manifest.csv").write_text("path,label\n")
    with pytest.raises(OutputLocationError, match="inside the input folder"):
        check_output_location(dataset / "model", [dataset / "manifest.csv"])


@pytest.mark.parametrize("arguments", [
    ["ingest", "folder", "{src}", "--out", "{src}", "--overwrite"],
    ["ingest", "folder", "{src}", "--out", "{src}/frames"],
    ["ingest", "pocus", "{src}", "--out", "{src}/frames"],
    ["train", "sinddm", "{src}/a/a0.png", "--out", "{src}"],
    ["train", "singan", "{src}", "--out", "{src}/model"],
    ["classify", "{src}", "--folds", "{src}/folds.csv", "--out", "{src}/cls"],
    ["quality", "{src}", "--real", "{src}", "--out", "{src}/q"],
    ["reader-study", "create", "--real", "{src}", "--synthetic", "{src}", "--out", "{src}/study"],
    ["run", "spec.yaml", "--data", "{src}", "--out", "{src}/run"],
    ["split", "{src}/manifest.csv", "--out", "{src}/manifest.csv"],
])
def test_every_command_refuses_to_write_into_its_input(tmp_path, monkeypatch, arguments):
    source = _tree(tmp_path / "src")
    (source / "manifest.csv").write_text("path,label\na/a0.png,a\n")
    (source / "folds.csv").write_text("patient_id,label,fold,minority_rank\n")
    (tmp_path / "spec.yaml").write_text("name: x\n")
    before = _files(source)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [a.format(src=source) for a in arguments])
    assert isinstance(result.exception, OutputLocationError), (result.exception, result.output)
    assert _files(source) == before


def test_a_killed_ingest_leaves_a_partial_folder_that_the_next_run_removes(tmp_path):
    out = tmp_path / "out"
    # A staging folder of a process that no longer exists, as kill -9 leaves it.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    dead_pid = int(child.stdout)
    stale = tmp_path / f".out.{dead_pid}-abc123.partial"
    (stale / "frames").mkdir(parents=True)
    (stale / OUTPUT_MARKER).write_text("{}")
    foreign = tmp_path / f".out.{dead_pid}-zzz.partial"  # same pattern, but not ours: kept
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    alive = tmp_path / f".out.{os.getppid()}-live.partial"  # a build still running: kept
    alive.mkdir()
    (alive / OUTPUT_MARKER).write_text("{}")
    ingest_folder(_tree(tmp_path / "src"), out, SMALL, progress=False)
    assert not stale.exists() and foreign.exists() and alive.exists()
    assert remove_stale_staging(out) == []


def test_staging_is_removed_when_the_block_fails_and_the_target_kept(tmp_path):
    target = tmp_path / "t"
    with staged_directory(target) as staging:
        (staging / "x").write_text("1")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "x").write_text("2")
        raise RuntimeError
    assert (target / "x").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["t"]


def test_removed_on_failure_removes_only_a_folder_it_saw_created(tmp_path):
    new = tmp_path / "new"
    with pytest.raises(ValueError), removed_on_failure(new):
        new.mkdir()
        (new / ".run-key.json").write_text("{}")
        raise ValueError
    assert not new.exists()
    old = tmp_path / "old"
    old.mkdir()
    with pytest.raises(ValueError), removed_on_failure(old):
        raise ValueError
    assert old.exists()
    with pytest.raises(KeyboardInterrupt), removed_on_failure(new):
        new.mkdir()
        raise KeyboardInterrupt
    assert new.exists()  # an interrupted command resumes from what it wrote


def test_a_simulated_dataset_is_found_again_from_another_working_folder(tmp_path, monkeypatch):
    # A study's data folder is reused when the study is resumed from anywhere, not only from where it started.
    options = PhantomOptions(patients={"covid": 1, "pneumonia": 1, "healthy": 1}, size=32, frames=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    make_phantom_dataset(tmp_path / "data", options, progress=False)
    monkeypatch.chdir(tmp_path / "b")
    _, report = make_phantom_dataset(tmp_path / "data", options, progress=False)
    assert report.reused
