"""Reading one source file (still image or clip) into raw grayscale frames, with skip reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sonosynth.data.images import IMAGE_SUFFIXES, UnreadableImage, load_grayscale, rgb_to_grayscale
from sonosynth.data.ingest import MIN_SIDE, FrameOptions, IngestReport, prepare_frames
from sonosynth.data.video import VIDEO_SUFFIXES, UnreadableVideo, sample_clip

MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES


def is_video(path: Path) -> bool:
    # Animated GIFs are clips here; a single-frame GIF still decodes as a one-frame clip.
    return path.suffix.lower() in VIDEO_SUFFIXES


def read_source(path: Path, fps: float, options: FrameOptions, report: IngestReport,
                fallback_rate: float | None = None, shown: str | None = None) -> list[tuple[int, np.ndarray]] | None:
    """Prepared (frame_index, image) pairs of one file, or None after logging why it was skipped.

    `shown` is the name used in the skip log (the path relative to the dataset folder).
    """
    shown = shown or str(path)
    try:
        if is_video(path):
            clip = sample_clip(path, fps, fallback_rate=fallback_rate)
            if clip.truncated:
                report.shortfall(shown, clip.problem, kept=len(clip.frames))
            indices = [f.frame_index for f in clip.frames]
            raw = [rgb_to_grayscale(f.image) for f in clip.frames]
        else:
            indices, raw = [0], [load_grayscale(path)]
    except (UnreadableImage, UnreadableVideo) as exc:
        report.skip(shown, str(exc))
        return None
    height, width = raw[0].shape
    if min(height, width) < MIN_SIDE:
        report.skip(shown, f"too small ({width}x{height} px; at least {MIN_SIDE} px needed)")
        return None
    if max(height, width) < options.size:
        report.notes[f"smaller than {options.size} px, upscaled"] += 1
    return list(zip(indices, prepare_frames(raw, options), strict=True))
