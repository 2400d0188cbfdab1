"""Contact sheets: rows of images with a label per row, for looking at data and samples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sonosynth.atomic import atomic_path
from sonosynth.data.images import load_grayscale
from sonosynth.data.manifest import Manifest

LABEL_WIDTH = 110


def image_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], tile: int = 128, gap: int = 4) -> Image.Image:
    """One row per (caption, images); each image is resized to tile x tile."""
    columns = max((len(images) for _, images in rows), default=0)
    width = LABEL_WIDTH + columns * (tile + gap)
    height = max(1, len(rows)) * (tile + gap)
    sheet = Image.new("L", (width, height), color=40)
    draw = ImageDraw.Draw(sheet)
    for r, (caption, images) in enumerate(rows):
        top = r * (tile + gap)
        draw.text((4, top + tile // 2 - 6), caption[:18], fill=230)
        for c, image in enumerate(images):
            thumb = Image.fromarray(image).convert("L").resize((tile, tile), Image.Resampling.BILINEAR)
            sheet.paste(thumb, (LABEL_WIDTH + c * (tile + gap), top))
    return sheet


def manifest_grid(manifest: Manifest, per_class: int = 6, seed: int = 0, tile: int = 128) -> Image.Image:
    """A seeded random draw of `per_class` images of each class, one class per row."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in manifest.classes:
        subset = manifest.with_labels([label])
        picks = rng.choice(len(subset), size=min(per_class, len(subset)), replace=False)
        paths = subset.absolute_paths()
        rows.append((label, [load_grayscale(paths[i]) for i in sorted(picks)]))
    return image_grid(rows, tile=tile)


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
