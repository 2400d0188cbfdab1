import re

import numpy as np
import pandas as pd
import pytest
from tests.media import truncate, write_clip, write_gif

from sonosynth.data.video import UnreadableVideo, sample_clip, sample_times


def test_ten_second_clip_at_30fps_gives_30_frames_at_3hz(tmp_path):
    clip = sample_clip(write_clip(tmp_path / "c.mp4", seconds=10, fps=30), fps=3)
    assert len(clip.frames) == 30
    times = np.array([f.time for f in clip.frames])
    np.testing.assert_allclose(times, np.arange(30) / 3, atol=1 / 30 + 1e-6)
    assert [f.frame_index for f in clip.frames] == list(range(0, 300, 10))
    assert not clip.truncated


@pytest.mark.parametrize("fps, rate, seconds", [(25, 3, 4), (15, 3, 2), (30, 1, 3), (10, 5, 2)])
def test_sampling_follows_timestamps_for_any_frame_rate(tmp_path, fps, rate, seconds):
    clip = sample_clip(write_clip(tmp_path / "c.avi", seconds=seconds, fps=fps), fps=rate)
    assert len(clip.frames) == len(sample_times(seconds, rate))


def test_palette_gif_frames_use_their_own_delays(tmp_path):
    # 12 frames of 250 ms = 3 s; at 2 Hz that is 6 frames, every second frame.
    clip = sample_clip(write_gif(tmp_path / "g.gif", n_frames=12, duration_ms=250), fps=2)
    assert [f.frame_index for f in clip.frames] == [0, 2, 4, 6, 8, 10]


def test_corrupt_and_empty_files_are_refused_with_a_reason(tmp_path):
    garbage = tmp_path / "bad.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 50)
    with pytest.raises(UnreadableVideo):
        sample_clip(garbage, fps=3)
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableVideo):
        sample_clip(empty, fps=3)


def test_truncated_clip_keeps_the_frames_before_the_damage(tmp_path):
    path = write_clip(tmp_path / "t.mpeg", seconds=6, fps=25, codec="mpeg1video")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    clip = sample_clip(path, fps=3)
    assert 3 <= len(clip.frames) < 18


@pytest.mark.parametrize("name, options", [("cut.avi", None), ("cut.mp4", {"movflags": "faststart"})])
def test_a_clip_cut_short_says_how_much_is_missing(tmp_path, name, options):
    # 4 s at 25 fps = 100 frames announced; the AVI ends silently after about 40 of them.
    path = truncate(write_clip(tmp_path / name, seconds=4, fps=25, options=options))
    clip = sample_clip(path, fps=3)
    assert clip.truncated and 1 <= len(clip.frames) < 12
    assert re.search(r"decoded \d+ of 100 frames", clip.problem), clip.problem


@pytest.mark.parametrize("name, codec, options", [
    ("whole.avi", "mpeg4", None), ("whole.mp4", "mpeg4", None), ("fast.mp4", "mpeg4", {"movflags": "faststart"}),
    ("whole.mpeg", "mpeg1video", None), ("whole.mov", "mpeg4", None), ("whole.webm", "libvpx", None),
])
def test_a_complete_clip_is_not_reported_short(tmp_path, name, codec, options):
    clip = sample_clip(write_clip(tmp_path / name, seconds=3, fps=25, codec=codec, options=options), fps=3)
    assert not clip.truncated, clip.problem
    assert len(clip.frames) == 9


def test_a_complete_gif_is_not_reported_short(tmp_path):
    clip = sample_clip(write_gif(tmp_path / "g.gif", n_frames=12, duration_ms=250), fps=2)
    assert not clip.truncated, clip.problem


def test_the_shortfall_is_in_the_ingest_summary_and_skip_log(tmp_path):
    from sonosynth.data.folder import FolderIngestOptions, ingest_folder

    (tmp_path / "src" / "a").mkdir(parents=True)
    truncate(write_clip(tmp_path / "src" / "a" / "cut.avi", seconds=4, fps=25))
    write_clip(tmp_path / "src" / "a" / "whole.avi", seconds=2, fps=25)
    manifest, report = ingest_folder(tmp_path / "src", tmp_path / "out", FolderIngestOptions(size=32), progress=False)
    assert [f for f, _ in report.cut_short] == ["a/cut.avi"] and not report.skipped
    log = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert log["file"].tolist() == ["a/cut.avi"]
    assert "clip cut short: decoded" in log["reason"][0] and "of 100 frames" in log["reason"][0]
    kept = int((manifest.table["source"] == "a/cut.avi").sum())
    assert kept >= 1 and f"; {kept} frame(s) before the damage kept" in log["reason"][0]
