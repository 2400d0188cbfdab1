"""Content hashes of files, shared by every cache key that must change when a file's bytes change."""

from __future__ import annotations

import hashlib
import os


def file_sha1(path: str | os.PathLike) -> str:
    """Hex SHA-1 of a file's bytes, read in 1 MiB blocks (weights files can be hundreds of MB)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
