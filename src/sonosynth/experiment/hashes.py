"""Content hashes of a unit's inputs: the images a manifest lists, by their bytes, label and patient."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sonosynth.data.manifest import Manifest
from sonosynth.hashing import file_sha1


@dataclass
class FileHasher:
    """Content hashes of files, memoised by (path, size, mtime) so each file is read once per run."""

    _memo: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = file_sha1(path)
        return self._memo[key]

    def manifest(self, manifest: Manifest) -> str:
        """A hash of the images (content, label, patient) a manifest lists, independent of where it lives."""
        digest = hashlib.sha1()
        rows = sorted(
            zip((self.file(p) for p in manifest.absolute_paths()), manifest.labels,
                manifest.table["patient_id"], strict=True)
        )
        for row in rows:
            digest.update("|".join(row).encode())
        return digest.hexdigest()
