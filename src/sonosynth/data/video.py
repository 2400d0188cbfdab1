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
    truncated: bool  # the clip ended before its container said it would; the frames before that are kept
    problem: str = ""  # what was missing, e.g. "decoded 39 of 100 frames, 1.6 s of 4.0 s"


# A clip counts as cut short when more than this share of its announced frames (or time) is missing,
# and at least two frames' worth: containers round durations and encoders may drop a trailing frame.
SHORTFALL_TOLERANCE = 0.02


def _announced(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
               rate: float) -> tuple[int | None, float | None]:
    """The frame count and duration in seconds the container announces (None where it does not say)."""
    frames = int(stream.frames) if stream.frames and stream.frames > 0 else None
    seconds = None
    if frames is None:
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
    elif rate > 0:
        seconds = frames / rate
    return frames, seconds


def shortfall(decoded: int, decoded_seconds: float, announced_frames: int | None,
              announced_seconds: float | None, rate: float) -> str:
    """Why a clip looks cut short ("decoded 39 of 100 frames, 1.6 s of 4.0 s"), or "" when it is complete.

    The announced frame count is compared when the container has one (AVI, MP4); otherwise the
    announced duration with the decoded span (last frame's time plus one frame interval).
    """
    frame_time = 1.0 / rate if rate > 0 else 0.0
    if announced_frames is not None:
        missing = announced_frames - decoded
        if missing > max(2, SHORTFALL_TOLERANCE * announced_frames):
            of_seconds = f", {decoded_seconds:.1f} s of {announced_seconds:.1f} s" if announced_seconds else ""
            return f"decoded {decoded} of {announced_frames} frames{of_seconds}"
        return ""
    if announced_seconds:
        missing_seconds = announced_seconds - decoded_seconds
        if missing_seconds > max(2 * frame_time, SHORTFALL_TOLERANCE * announced_seconds):
            return f"decoded {decoded_seconds:.1f} s of {announced_seconds:.1f} s, {decoded} frames"
    return ""


def sample_times(duration: float, fps: float) -> list[float]:
    """The target timestamps 0, 1/fps, 2/fps, ... strictly before `duration`."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    count = max(1, math.ceil(duration * fps - 1e-9))
    return [k / fps for k in range(count)]


def _frame_rate(stream: av.video.stream.VideoStream, fallback_rate: float | None) -> float:
    return float(stream.average_rate or stream.guessed_rate or 0) or (fallback_rate or 0) or 25.0


def _frame_times(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 rate: float) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """Decoded frames with their time in seconds, relative to the first frame."""
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
    A clip that ends early, on a decoding error or silently (a truncated file whose header still
    announces the full length), keeps the frames decoded so far and is marked truncated with what is
    missing; a clip with no decodable frame raises UnreadableVideo.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    path = Path(path)
    frames: list[SampledFrame] = []
    problem = ""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise UnreadableVideo(f"cannot open as a video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise UnreadableVideo("no video stream in the file")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = _frame_rate(stream, fallback_rate)
        announced_frames, announced_seconds = _announced(container, stream, rate)
        next_target = 0.0
        decoded, last_time = 0, 0.0
        try:
            for index, time, frame in _frame_times(container, stream, rate):
                decoded, last_time = index + 1, time
                # Half a microsecond of slack: timestamps are rationals rounded to floats.
                if time + 5e-7 >= next_target:
                    frames.append(SampledFrame(index, time, frame.to_ndarray(format="rgb24")))
                    # Index the grid instead of accumulating 1/fps, which drifts over long clips.
                    next_target = (math.floor(time * fps + 5e-7 * fps) + 1) / fps
        except (av.error.FFmpegError, ValueError) as exc:
            problem = f"decoding stopped early ({exc})"
    if not frames:
        raise UnreadableVideo(problem or "the clip has no decodable frames")
    short = shortfall(decoded, last_time + 1.0 / rate, announced_frames, announced_seconds, rate)
    problem = "; ".join(p for p in (short, problem) if p)
    return SampledClip(frames, bool(problem), problem)
