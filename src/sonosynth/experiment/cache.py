"""The content-addressed cache that makes a study resumable and extensible.

Every unit of work (a generator fit, a sampling run, a classifier run) lives in
`cache/<kind>/<hash>/`, where the hash covers the unit's config and the *content* of its input
images. A unit is finished when its `.done` marker exists (written last, atomically). An
interrupted unit keeps its partial folder, so a generator's own resume continues it; an extended
spec reuses every unit whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonosynth.atomic import write_text_atomic
from sonosynth.data.manifest import Manifest
from sonosynth.hashing import file_sha1

DONE_MARKER = ".done"


def _stable_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


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


@dataclass
class CacheStats:
    hits: int = 0
    computed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class UnitCache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.stats = CacheStats()
        self.hasher = FileHasher()

    def key(self, kind: str, payload: dict[str, Any]) -> str:
        return hashlib.sha256(_stable_json({"kind": kind, **payload}).encode()).hexdigest()[:20]

    def unit_dir(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def is_done(self, kind: str, key: str) -> bool:
        return (self.unit_dir(kind, key) / DONE_MARKER).is_file()

    def run(self, kind: str, payload: dict[str, Any], compute: Callable[[Path], Any]) -> Path:
        """Return the unit's folder, computing it first unless it is already done."""
        key = self.key(kind, payload)
        folder = self.unit_dir(kind, key)
        if self.is_done(kind, key):
            self.stats.hits += 1
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "unit.json", _stable_json({"kind": kind, **payload}))
        started = time.perf_counter()
        compute(folder)
        elapsed = time.perf_counter() - started
        write_text_atomic(folder / DONE_MARKER, json.dumps({"seconds": elapsed, "finished": time.time()}))
        self.stats.computed += 1
        self.stats.seconds[kind] = self.stats.seconds.get(kind, 0.0) + elapsed
        return folder
