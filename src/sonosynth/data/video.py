"""Frames from ultrasound clips, sampled by timestamp with PyAV.

Sampling by presentation time (not every n-th frame) gives the same rate in Hz for clips
recorded at 15, 25, 30 or variable frame rates, and for GIFs whose frames have their own delays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mpeg", ".mpg", ".gif", ".m4v", ".webm")


class UnreadableVideo(Exception):
    """A clip that yields no usable frame; the message says why (for a skip log)."""


@dataclass(frozen=True)
class SampledFrame:
    frame_index: int  # position of the frame in decode order
    time: float  # seconds from the clip's first frame
    image: np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class SampledClip:
    frames: list[SampledFrame]
    truncated: bool  # decoding stopped early on a damaged stream; the frames before it are kept
    problem: str = ""


def sample_times(duration: float, fps: float) -> list[float]:
    """The target timestamps 0, 1/fps, 2/fps, ... strictly before `duration`."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    count = max(1, math.ceil(duration * fps - 1e-9))
    return [k / fps for k in range(count)]


def _frame_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 fallback_rate: float | None) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Decoded frames with their time in seconds, relative to the first frame."""
    rate = float(stream.average_rate or stream.guessed_rate or 0) or (fallback_rate or 0) or 25.0
    start: float | None = None
    for index, frame in enumerate(container.decode(stream)):
        stamp = frame.time
        if stamp is None:
            stamp = index / rate
        if start is None:
            start = stamp
        yield index, stamp - start, frame


def sample_clip(path: str | os.PathLike, fps: float, fallback_rate: float | None = None) -> SampledClip:
    """Decode `path` and keep the first frame at or after each multiple of 1/fps seconds.

    A clip of D seconds therefore gives about D*fps frames (a 10 s clip at 3 Hz gives 30).
    Errors mid-stream keep the frames decoded so far and mark the clip truncated; a clip with no
    decodable frame raises UnreadableVideo.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    path = Path(path)
    frames: list[SampledFrame] = []
    truncated, problem = False, ""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise UnreadableVideo(f"cannot open as a video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise UnreadableVideo("no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        next_target = 0.0
        try:
            for index, time, frame in _frame_times(container, stream, fallback_rate):
                # Half a microsecond of slack: timestamps are rationals rounded to floats.
                if time + 5e-7 >= next_target:
                    frames.append(SampledFrame(index, time, frame.to_ndarray(format="rgb24")))
                    # Index the grid instead of accumulating 1/fps, which drifts over long clips.
                    next_target = (math.floor(time * fps + 5e-7 * fps) + 1) / fps
        except (av.error.FFmpegError, ValueError) as exc:
            truncated, problem = True, f"decoding stopped early ({exc})"
    if not frames:
        raise UnreadableVideo(problem or "the clip has no decodable frames")
    return SampledClip(frames, truncated, problem)
