"""Reading any still image into 8-bit grayscale, and writing PNGs safely.

Ultrasound stills arrive as JPEG, palette GIF/PNG, RGBA screenshots, and 16-bit PNGs from
scanners; all are brought to one representation here, once, so no later stage has to care.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sonosynth.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class UnreadableImage(Exception):
    """An image file that cannot be decoded; the message says why (for a skip log)."""


def load_grayscale(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to a (H, W) uint8 array, whatever its mode or bit depth."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return pil_to_grayscale(image)
    except UnidentifiedImageError as exc:
        raise UnreadableImage("not a recognised image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # Pillow raises OSError for truncated files and SyntaxError for some corrupt headers.
        raise UnreadableImage(f"corrupt or truncated image ({exc})") from exc


def pil_to_grayscale(image: Image.Image) -> np.ndarray:
    """Bring any Pillow image mode to (H, W) uint8.

    Transparent pixels become black (the colour of an ultrasound background); high-bit-depth
    images are scaled by their actual range so a 12-bit scan stored in 16 bits is not nearly black.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.uint8)


def rgb_to_grayscale(array: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 to (H, W) uint8 with the same luma weights Pillow uses."""
    if array.ndim == 2:
        return array.astype(np.uint8, copy=False)
    return pil_to_grayscale(Image.fromarray(array[..., :3].astype(np.uint8, copy=False)))


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a (H, W) or (H, W, C) uint8 array as PNG, atomically."""
    if array.dtype != np.uint8:
        raise TypeError(f"save_png expects uint8, got {array.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
