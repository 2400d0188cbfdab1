"""The study database: the answer key, the readers, their shuffled orders and their answers.

One SQLite file per study folder, in WAL mode with full sync, so an answer is on disk the moment
the request that gave it returns, and a reader can stop at any time and resume later. Every call
opens its own short-lived connection: the web server answers requests from a thread pool, and a
connection must not be shared between threads.

Readers answer their images in order; an answer is accepted for the current image or any earlier
one (going back), never for a later one, so the answered images are always a prefix of the
reader's order and "where to resume" is simply the length of that prefix.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from sonosynth.errors import SonosynthError

DATABASE_FILENAME = "study.sqlite"
IMAGES_DIRNAME = "images"
STUDY_FORMAT = "sonosynth-reader-study"
STUDY_VERSION = "1"
ANSWERS = ("real", "synthetic")
ORIGINS = ("real", "synthetic")
IMAGE_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
READER_TOKEN_PATTERN = re.compile(r"^[0-9a-f]{32}$")
MAX_NAME_LENGTH = 80
MAX_NOTE_LENGTH = 2000

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    image_id TEXT PRIMARY KEY,
    origin TEXT NOT NULL CHECK (origin IN ('real', 'synthetic')),
    generator TEXT,
    label TEXT,
    patient_id TEXT,
    source TEXT NOT NULL,
    CHECK ((origin = 'synthetic') = (generator IS NOT NULL))
);
CREATE TABLE readers (
    reader_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE reader_order (
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    position INTEGER NOT NULL,
    image_id TEXT NOT NULL REFERENCES images (image_id),
    PRIMARY KEY (reader_id, position),
    UNIQUE (reader_id, image_id)
);
CREATE TABLE answers (
    reader_id INTEGER NOT NULL REFERENCES readers (reader_id),
    image_id TEXT NOT NULL REFERENCES images (image_id),
    answer TEXT NOT NULL CHECK (answer IN ('real', 'synthetic')),
    confidence INTEGER CHECK (confidence BETWEEN 1 AND 5),
    note TEXT,
    seconds REAL,
    answered_at TEXT NOT NULL,
    revisions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (reader_id, image_id)
);
"""


class NotFound(LookupError):
    """An unknown reader, image or position (the web app answers 404)."""


class NameTaken(LookupError):
    """A reader name already in use: only that reader's own link (their secret token) resumes it."""


class OutOfOrder(ValueError):
    """An answer for an image the reader has not reached yet (the web app answers 409)."""


@dataclass(frozen=True)
class KeyRow:
    """One study image and the truth about it (never shown to a reader)."""

    image_id: str
    origin: str
    generator: str | None
    label: str | None
    patient_id: str | None
    source: str


@dataclass(frozen=True)
class Reader:
    token: str
    name: str
    total: int
    answered: int


@dataclass(frozen=True)
class Item:
    """One position in a reader's order, with the answer already given there (if any)."""

    position: int
    image_id: str
    answer: str | None
    confidence: int | None
    note: str | None


def new_image_id() -> str:
    return secrets.token_hex(8)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    # FULL: a committed answer survives a power cut, not only a crash of the server.
    connection.execute("PRAGMA synchronous = FULL")
    return connection


def create_database(path: str | os.PathLike, key: Sequence[KeyRow], meta: dict[str, str]) -> None:
    """Write a new study database holding the key; the file must not exist yet."""
    path = Path(path)
    if path.exists():
        raise SonosynthError(f"{path}: a study database already exists here.")
    connection = _connect(path)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(SCHEMA)
        with _transaction(connection):
            connection.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("format", STUDY_FORMAT), ("version", STUDY_VERSION), ("created_at", _now()),
                 ("salt", secrets.token_hex(16)), *sorted(meta.items())],
            )
            connection.executemany(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?)",
                [(r.image_id, r.origin, r.generator, r.label, r.patient_id, r.source)
                 for r in sorted(key, key=lambda r: r.image_id)],
            )
    finally:
        connection.close()


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


class StudyStore:
    """Access to one study folder's database; validated on construction."""

    def __init__(self, study_dir: str | os.PathLike) -> None:
        self.study_dir = Path(study_dir)
        self.database = self.study_dir / DATABASE_FILENAME
        self.images_dir = self.study_dir / IMAGES_DIRNAME
        self.meta = self._validated_meta()

    # ----------------------------------------------------------------- validation
    def _validated_meta(self) -> dict[str, str]:
        hint = "Create a study with `sonosynth reader-study create ... --out FOLDER`."
        if not self.study_dir.is_dir():
            raise SonosynthError(f"{self.study_dir}: no such folder. {hint}")
        if not self.database.is_file():
            raise SonosynthError(f"{self.study_dir}: not a reader study (no {DATABASE_FILENAME}). {hint}")
        try:
            with self._connection() as connection:
                meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
                images = connection.execute("SELECT image_id FROM images").fetchall()
        except sqlite3.DatabaseError as exc:
            raise SonosynthError(f"{self.database}: not a reader-study database ({exc}). {hint}") from exc
        if meta.get("format") != STUDY_FORMAT:
            raise SonosynthError(f"{self.database}: not a reader-study database (format {meta.get('format')!r}). {hint}")
        if meta.get("version") != STUDY_VERSION:
            raise SonosynthError(
                f"{self.database}: study format version {meta.get('version')!r}; this sonosynth reads "
                f"version {STUDY_VERSION}. Use the sonosynth version that created it."
            )
        missing = [i for (i,) in images if not (self.images_dir / f"{i}.png").is_file()]
        if not images or missing:
            raise SonosynthError(
                f"{self.study_dir}: {len(missing)} study image(s) missing from {self.images_dir}"
                if missing else f"{self.study_dir}: the study holds no images. {hint}"
            )
        return meta

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = _connect(self.database)
        try:
            yield connection
        finally:
            connection.close()

    # ----------------------------------------------------------------- key
    def image_path(self, image_id: str) -> Path:
        """The file of a study image, looked up by ID; never built from unchecked input."""
        if not IMAGE_ID_PATTERN.match(image_id):
            raise NotFound(image_id)
        with self._connection() as connection:
            row = connection.execute("SELECT image_id FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(image_id)
        return self.images_dir / f"{row[0]}.png"

    def key(self) -> pd.DataFrame:
        with self._connection() as connection:
            return pd.read_sql_query("SELECT * FROM images ORDER BY image_id", connection)

    # ----------------------------------------------------------------- readers
    def register_reader(self, name: str, resume_existing: bool = False) -> Reader:
        """A new reader of this name, with their own shuffled order.

        The token returned is the reader's secret: it alone opens their reading. A name already
        taken raises NameTaken, so typing someone's name never hands out their token; the study
        owner (who holds the database) may pass `resume_existing` to look up an existing reader.
        """
        name = " ".join(name.split())
        if not name or len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"a reader name has 1 to {MAX_NAME_LENGTH} characters")
        with self._connection() as connection, _transaction(connection):
            row = connection.execute("SELECT token FROM readers WHERE name = ?", (name,)).fetchone()
            if row is None:
                token = secrets.token_hex(16)
                cursor = connection.execute(
                    "INSERT INTO readers (name, token, created_at) VALUES (?, ?, ?)", (name, token, _now())
                )
                image_ids = [i for (i,) in connection.execute("SELECT image_id FROM images ORDER BY image_id")]
                # Seeded by the study's secret salt and the name: reproducible for an audit, unknown to readers.
                random.Random(f"{self.meta['salt']}/{name}").shuffle(image_ids)
                connection.executemany(
                    "INSERT INTO reader_order (reader_id, position, image_id) VALUES (?, ?, ?)",
                    [(cursor.lastrowid, position, image_id) for position, image_id in enumerate(image_ids)],
                )
            elif resume_existing:
                token = row[0]
            else:
                raise NameTaken(name)
        return self.reader(token)

    def _reader_id(self, connection: sqlite3.Connection, token: str) -> tuple[int, str]:
        if not READER_TOKEN_PATTERN.match(token):
            raise NotFound(token)
        row = connection.execute("SELECT reader_id, name FROM readers WHERE token = ?", (token,)).fetchone()
        if row is None:
            raise NotFound(token)
        return row[0], row[1]

    def reader(self, token: str) -> Reader:
        with self._connection() as connection:
            reader_id, name = self._reader_id(connection, token)
            total, answered = connection.execute(
                "SELECT COUNT(*), COUNT(a.image_id) FROM reader_order o "
                "LEFT JOIN answers a ON a.reader_id = o.reader_id AND a.image_id = o.image_id WHERE o.reader_id = ?",
                (reader_id,),
            ).fetchone()
        return Reader(token=token, name=name, total=total, answered=answered)

    def item(self, token: str, position: int) -> Item:
        with self._connection() as connection:
            reader_id, _ = self._reader_id(connection, token)
            row = connection.execute(
                "SELECT o.position, o.image_id, a.answer, a.confidence, a.note FROM reader_order o "
                "LEFT JOIN answers a ON a.reader_id = o.reader_id AND a.image_id = o.image_id "
                "WHERE o.reader_id = ? AND o.position = ?",
                (reader_id, position),
            ).fetchone()
        if row is None:
            raise NotFound(f"position {position}")
        return Item(*row)

    def answer(self, token: str, image_id: str, answer: str, confidence: int | None = None,
               note: str | None = None, seconds: float | None = None) -> Reader:
        """Record (or revise) an answer; committed to disk before this returns."""
        if answer not in ANSWERS:
            raise ValueError(f"answer must be one of {ANSWERS}")
        if confidence is not None and not 1 <= confidence <= 5:
            raise ValueError("confidence must be 1 to 5")
        note = (note or "").strip() or None
        if note is not None and len(note) > MAX_NOTE_LENGTH:
            raise ValueError(f"a note has at most {MAX_NOTE_LENGTH} characters")
        with self._connection() as connection, _transaction(connection):
            reader_id, _ = self._reader_id(connection, token)
            row = connection.execute(
                "SELECT position FROM reader_order WHERE reader_id = ? AND image_id = ?", (reader_id, image_id)
            ).fetchone()
            if row is None:
                raise NotFound(image_id)
            (answered,) = connection.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()
            if row[0] > answered:
                raise OutOfOrder(f"image at position {row[0]} comes after the current one ({answered})")
            connection.execute(
                "INSERT INTO answers (reader_id, image_id, answer, confidence, note, seconds, answered_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (reader_id, image_id) DO UPDATE SET "
                "answer = excluded.answer, confidence = excluded.confidence, note = excluded.note, "
                "seconds = excluded.seconds, answered_at = excluded.answered_at, revisions = revisions + 1",
                (reader_id, image_id, answer, confidence, note, seconds, _now()),
            )
        return self.reader(token)

    # ----------------------------------------------------------------- analysis
    def answers(self) -> pd.DataFrame:
        """Every answer joined with the key: reader, image_id, origin, generator, label, answer, confidence, ..."""
        with self._connection() as connection:
            return pd.read_sql_query(
                "SELECT r.name AS reader, a.image_id, i.origin, i.generator, i.label, a.answer, a.confidence, "
                "a.note, a.seconds, a.revisions, a.answered_at FROM answers a "
                "JOIN readers r ON r.reader_id = a.reader_id JOIN images i ON i.image_id = a.image_id "
                "ORDER BY r.name, a.image_id",
                connection,
            )

    def progress(self) -> pd.DataFrame:
        """Per reader: images answered out of the total."""
        with self._connection() as connection:
            return pd.read_sql_query(
                "SELECT r.name AS reader, COUNT(a.image_id) AS answered, COUNT(o.image_id) AS total "
                "FROM readers r JOIN reader_order o ON o.reader_id = r.reader_id "
                "LEFT JOIN answers a ON a.reader_id = o.reader_id AND a.image_id = o.image_id "
                "GROUP BY r.reader_id ORDER BY r.name",
                connection,
            )


__all__ = [
    "ANSWERS", "DATABASE_FILENAME", "IMAGES_DIRNAME", "Item", "KeyRow", "NameTaken", "NotFound", "OutOfOrder", "Reader",
    "StudyStore", "create_database", "new_image_id",
]
