import shutil

import pandas as pd
import pytest
from tests.media import write_clip, write_gif, write_image

from sonosynth.data.folder import FolderIngestOptions, ingest_folder
from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest
from sonosynth.data.pocus import PocusIngestOptions, ingest_pocus
from sonosynth.errors import InputDataError

METADATA_COLUMNS = ["Filename", "Label", "License", "Patient ID / Name", "Framerate"]


def _pocus_tree(root):
    """A POCUS-layout folder with good files and every kind of bad input the ingest must survive."""
    images, videos = root / "pocus_images" / "convex", root / "pocus_videos" / "convex"
    images.mkdir(parents=True)
    videos.mkdir(parents=True)
    write_clip(videos / "Cov_clip.mp4", seconds=4, fps=25)  # 12 frames at 3 Hz
    write_clip(videos / "Reg_clip.avi", seconds=2, fps=30)  # 6 frames
    write_gif(videos / "Pneu_anim.gif", n_frames=6, duration_ms=500)  # 3 s at 3 Hz -> 6 of 6 frames
    write_image(images / "Pneu_still_rgba.png", "RGBA")
    write_image(images / "Pneu_still16.png", "I;16")
    write_image(images / "Reg_palette.png", "P")
    write_image(images / "Reg_tiny.png", "L", size=(8, 8))
    write_clip(videos / "Vir_clip.mp4", seconds=1, fps=10)
    (videos / "Cov_broken.mp4").write_bytes(b"\x00garbage" * 100)
    (videos / "Cov_empty.mov").write_bytes(b"")
    write_image(images / "Xyz_unknown.png", "L")
    (images / "notes.txt").write_text("not media")
    rows = [
        ("Cov_clip", "COVID-19", "CC BY 4.0", "11", "25"),
        ("Reg_clip", "regular", "CC BY-NC 4.0", "12", "30"),
        ("Pneu_anim", "Bacterial pneumonia", "CC BY 4.0", "", ""),
        ("Pneu_still_rgba", "Bacterial pneumonia", "CC BY 4.0", "13", ""),
        ("Pneu_still16", "Bacterial pneumonia", "CC BY 4.0", "13", ""),
        ("Reg_palette", "regular", "CC BY 4.0", "14", ""),
        ("Reg_tiny", "regular", "CC BY 4.0", "14", ""),
        ("Vir_clip", "Viral pneumonia", "CC BY 4.0", "15", ""),
        ("Cov_broken", "COVID-19", "CC BY 4.0", "16", ""),
        ("Cov_empty", "COVID-19", "CC BY 4.0", "16", ""),
        ("Xyz_unknown", "Something else", "CC BY 4.0", "17", "not a number"),
    ]
    pd.DataFrame(rows, columns=METADATA_COLUMNS).to_csv(root / "dataset_metadata.csv", index=False)
    return root


def test_pocus_ingest_reads_good_files_and_logs_every_bad_one(tmp_path):
    source = _pocus_tree(tmp_path / "pocus")
    manifest, report = ingest_pocus(source, tmp_path / "out", PocusIngestOptions(size=64), progress=False)
    counts = manifest.table.groupby("source").size().to_dict()
    assert counts == {
        "pocus_videos/convex/Cov_clip.mp4": 12, "pocus_videos/convex/Reg_clip.avi": 6,
        "pocus_videos/convex/Pneu_anim.gif": 6, "pocus_images/convex/Pneu_still_rgba.png": 1,
        "pocus_images/convex/Pneu_still16.png": 1, "pocus_images/convex/Reg_palette.png": 1,
    }
    skipped = {f.split("/")[-1]: r for f, r in report.skipped}
    assert all(f.startswith("pocus_") for f, _ in report.skipped)  # names relative to the dataset folder
    assert set(skipped) == {"Vir_clip.mp4", "Cov_broken.mp4", "Cov_empty.mov", "Reg_tiny.png", "Xyz_unknown.png", "notes.txt"}
    assert "too small" in skipped["Reg_tiny.png"] and "unknown class" in skipped["Xyz_unknown.png"]
    assert skipped["Vir_clip.mp4"].startswith("class not requested")
    assert "video" in skipped["Cov_broken.mp4"] and "video" in skipped["Cov_empty.mov"]
    # Patients: from the metadata, or the file itself when the ID is missing.
    patients = manifest.table.drop_duplicates("source").set_index("source")["patient_id"].to_dict()
    assert patients["pocus_images/convex/Pneu_still16.png"] == patients["pocus_images/convex/Pneu_still_rgba.png"] == "pocus-13"
    assert patients["pocus_videos/convex/Pneu_anim.gif"] == "pocus-file-Pneu_anim"
    shapes = {load_grayscale(p).shape for p in Manifest.read(tmp_path / "out").absolute_paths()}
    assert shapes == {(64, 64)}
    assert (tmp_path / "out" / "skipped.csv").is_file()


def test_max_frames_keeps_the_first_frames_of_each_clip(tmp_path):
    source = _pocus_tree(tmp_path / "pocus")
    manifest, _ = ingest_pocus(source, tmp_path / "out", PocusIngestOptions(size=32, max_frames=4), progress=False)
    counts = manifest.table.groupby("source").size().to_dict()
    assert counts["pocus_videos/convex/Cov_clip.mp4"] == 4 and counts["pocus_images/convex/Reg_palette.png"] == 1
    first = manifest.table[manifest.table["source"] == "pocus_videos/convex/Cov_clip.mp4"]["frame_index"]
    full, _ = ingest_pocus(source, tmp_path / "full", PocusIngestOptions(size=32), progress=False)
    every = full.table[full.table["source"] == "pocus_videos/convex/Cov_clip.mp4"]["frame_index"]
    assert list(first) == sorted(every)[:4]


def test_licence_filter_and_viral_option(tmp_path):
    source = _pocus_tree(tmp_path / "pocus")
    options = PocusIngestOptions(size=32, exclude_licenses="NC", classes=["covid", "pneumonia", "healthy", "viral"])
    manifest, report = ingest_pocus(source, tmp_path / "out", options, progress=False)
    assert "pocus_videos/convex/Reg_clip.avi" not in set(manifest.table["source"])
    assert "viral" in set(manifest.table["label"])
    assert any("licence excluded" in r for _, r in report.skipped)


def test_rerun_reuses_a_finished_ingest_and_refuses_a_different_one(tmp_path):
    source = _pocus_tree(tmp_path / "pocus")
    out = tmp_path / "out"
    ingest_pocus(source, out, PocusIngestOptions(size=32), progress=False)
    _, again = ingest_pocus(source, out, PocusIngestOptions(size=32), progress=False)
    assert again.reused
    with pytest.raises(InputDataError, match="--overwrite"):
        ingest_pocus(source, out, PocusIngestOptions(size=48), progress=False)
    manifest, report = ingest_pocus(source, out, PocusIngestOptions(size=48), overwrite=True, progress=False)
    assert not report.reused and len(manifest) == 27


def test_a_crash_mid_ingest_leaves_no_output_folder(tmp_path, monkeypatch):
    source = _pocus_tree(tmp_path / "pocus")
    from sonosynth.data import pocus

    calls = {"n": 0}
    real_read = pocus.read_source

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_read(*args, **kwargs)

    monkeypatch.setattr(pocus, "read_source", failing)
    with pytest.raises(KeyboardInterrupt):
        ingest_pocus(source, tmp_path / "out", PocusIngestOptions(size=32), progress=False)
    assert not (tmp_path / "out").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_missing_metadata_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputDataError, match="dataset_metadata.csv"):
        ingest_pocus(tmp_path / "empty", tmp_path / "out", progress=False)


def test_folder_ingest_from_class_folders_and_from_csv(tmp_path):
    tree = tmp_path / "tree"
    for label in ("a", "b"):
        (tree / label).mkdir(parents=True)
        for i in range(2):
            write_image(tree / label / f"{label}{i}.png", "RGB")
    write_clip(tree / "b" / "clip.mp4", seconds=1, fps=10)
    manifest, report = ingest_folder(tree, tmp_path / "out", FolderIngestOptions(size=32), progress=False)
    assert manifest.counts()["images"].to_dict() == {"a": 2, "b": 5}
    assert report.notes["no patient ID: file is its own patient"] == 5
    listing = tmp_path / "list.csv"
    pd.DataFrame({"path": ["tree/a/a0.png", "tree/a/a1.png", "tree/b/b0.png", "tree/b/missing.png"],
                  "label": ["a", "a", "b", "b"], "patient_id": ["p1", "p1", "p2", "p3"]}).to_csv(listing, index=False)
    manifest, report = ingest_folder(listing, tmp_path / "out2", FolderIngestOptions(size=32), progress=False)
    assert sorted(manifest.table["patient_id"]) == ["p1", "p1", "p2"]
    assert [r for _, r in report.skipped] == ["file not found"]


@pytest.mark.realdata
def test_real_pocus_files_ingest(tmp_path, pocus_dir):
    """A handful of real files (one per kind) through the real metadata; the full ingest is an acceptance run."""
    subset = tmp_path / "pocus"
    subset.mkdir()
    shutil.copy(pocus_dir / "dataset_metadata.csv", subset / "dataset_metadata.csv")
    picks = {"pocus_images/convex": ["Pneu_Avi_consolidated-lung.JPG", "Reg_Avi_normal-A-lines.JPG"],
             "pocus_videos/convex": None}
    for folder, names in picks.items():
        (subset / folder).mkdir(parents=True)
        files = sorted((pocus_dir / folder).iterdir())
        chosen = [pocus_dir / folder / n for n in names] if names else (
            [next(f for f in files if f.suffix == ".gif")] + [next(f for f in files if f.suffix == ".avi")]
        )
        for f in chosen:
            (subset / folder / f.name).symlink_to(f)
    manifest, report = ingest_pocus(subset, tmp_path / "out", PocusIngestOptions(size=128), progress=False)
    assert report.files_read == 4 and not report.skipped
    assert set(manifest.table["label"]) <= {"covid", "pneumonia", "healthy"}
    assert manifest.table["patient_id"].str.startswith("pocus-").all()
    assert len(manifest) >= 4
