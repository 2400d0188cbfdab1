"""Tiny media files made inside the tests (no real data needed): clips, palette GIFs, odd PNG modes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def sector_frame(size: tuple[int, int], value: int = 120, seed: int = 0) -> np.ndarray:
    """A bright textured block on a black screen with a small 'text' blob in a corner, like a scanner screenshot."""
    height, width = size
    rng = np.random.default_rng(seed)
    frame = np.zeros((height, width), dtype=np.uint8)
    top, left = height // 6, width // 5
    frame[top : height - top, left : width - left] = np.clip(
        rng.normal(value, 25, (height - 2 * top, width - 2 * left)), 30, 255
    ).astype(np.uint8)
    frame[2:6, 2:14] = 255  # an overlay label, separate from the content
    return frame


def write_clip(path: Path, seconds: float, fps: int, size: tuple[int, int] = (64, 80), codec: str = "mpeg4",
               options: dict[str, str] | None = None) -> Path:
    """An encoded clip of `seconds` at `fps`, each frame's brightness encoding its index.

    `options` go to the muxer, e.g. {"movflags": "faststart"} puts an MP4's index first, as
    phones and scanners often do, so a truncated copy still opens and announces its full length.
    """
    n_frames = round(seconds * fps)
    with av.open(str(path), mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for index in range(n_frames):
            gray = sector_frame(size, value=40 + index % 200, seed=index)
            frame = av.VideoFrame.from_ndarray(np.repeat(gray[..., None], 3, axis=2), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_gif(path: Path, n_frames: int, duration_ms: int, size: tuple[int, int] = (48, 64)) -> Path:
    """A palette (mode P) animated GIF."""
    frames = [Image.fromarray(sector_frame(size, value=60 + 10 * i, seed=i)).convert("P") for i in range(n_frames)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def write_image(path: Path, mode: str, size: tuple[int, int] = (60, 90)) -> Path:
    gray = sector_frame(size)
    if mode == "L":
        image = Image.fromarray(gray)
    elif mode == "RGB":
        image = Image.fromarray(np.stack([gray, gray // 2, gray], axis=2))
    elif mode == "RGBA":
        alpha = np.full(size, 255, np.uint8)
        alpha[:, : size[1] // 4] = 0  # a transparent strip must come out black
        image = Image.fromarray(np.stack([gray, gray, gray, alpha], axis=2))
    elif mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 16)  # 12-bit data stored in 16 bits
    elif mode == "P":
        image = Image.fromarray(gray).convert("P")
    else:
        raise ValueError(mode)
    image.save(path)
    return path


def truncate(path: Path, keep: float = 2 / 3) -> Path:
    """Cut a file to its first `keep` share of bytes, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
