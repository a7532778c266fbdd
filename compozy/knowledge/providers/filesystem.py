"""The filesystem vector store: a directory of numpy and JSON files, searched with numpy.

Layout of the directory (created with mode 0700, every file 0600):

- ``manifest.json``: ``{"format", "dimension", "version", "next_segment", "segments"}``, the
  list of segment names in the order they apply;
- ``seg-<n>.npy``: the float32 vectors of one write (rows), ``seg-<n>.json``: their ids, texts
  and metadata, and the ids that write deleted (``deleted``, applied before its rows);
- ``lock``: the file ``fcntl.flock`` locks, shared to read and exclusive to write.

A write (upsert or delete) appends a segment: its two files are written and fsynced, then the
manifest is replaced atomically (temporary file, fsync, ``os.replace``, fsync of the directory),
so a crash leaves the previous manifest and its segments whole. A write costs the size of the
batch, not of the store. When there are many segments, or more shadowed rows than live ones,
the write that crosses the line compacts them into one segment.

Each open store keeps the data in memory (unit vectors in one float32 matrix, their norms, and
the ids, texts and metadata by row) and, under the lock, brings it up to date with the manifest
before every operation: segments appended by another process are applied; after a compaction
it reads everything again. Two processes writing at once therefore take turns and lose nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compozy.errors import CompozyError, ConfigError
from compozy.knowledge import Match, Metadata, MetadataValue, Record
from compozy.knowledge.providers import _common

if TYPE_CHECKING:
    from compozy.config import VectorDBConfig
    from compozy.knowledge.providers._common import FloatMatrix

__all__ = ["FilesystemVectorStore", "open_store"]

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = "lock"
MAX_SEGMENTS = 32
"""A write that leaves more segments than this compacts them into one."""
_ADVICE = "check that the directory exists, is writable and is not full"


def open_store(config: VectorDBConfig) -> FilesystemVectorStore:
    """The store of a ``provider: filesystem`` vector DB (``path`` is its directory)."""
    if not config.path:
        raise ConfigError(f"knowledge.vector_dbs ({config.id}): filesystem needs path; set it.")
    return FilesystemVectorStore(config.path, config.dimension)


def _write_file(path: Path, write: Any) -> None:
    """Create ``path`` (mode 0600) with what ``write(file)`` writes, and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class FilesystemVectorStore:
    """A vector store in a directory (see the module's docstring for the files)."""

    provider = "filesystem"

    def __init__(self, path: str | os.PathLike[str], dimension: int) -> None:
        self._path = Path(path)
        self._dimension = dimension
        self._mutex = threading.RLock()
        self._lock_fd = -1
        self._reset()
        with self._io():
            if not self._path.is_dir():
                self._path.mkdir(mode=0o700, parents=True)
                os.chmod(self._path, 0o700)
            self._lock_fd = os.open(self._path / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked(exclusive=True):
                if not (self._path / MANIFEST).exists():
                    self._write_manifest([], next_segment=1, version=0)
        except BaseException:
            self.close()
            raise

    # -- the in-memory copy --------------------------------------------------------------------

    def _reset(self) -> None:
        self._segments: list[str] = []
        self._version = -1
        self._next_segment = 1
        self._n = 0  # rows used, live or shadowed
        self._normed: FloatMatrix = np.zeros((0, self._dimension), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        self._ids: list[str] = []
        self._texts: list[str] = []
        self._metadata: list[dict[str, Any]] = []
        self._rows: dict[str, int] = {}  # id -> its live row
        # Per metadata key filtered on: the typed token of each row's value (None: no key),
        # built when a filter first names the key and extended after writes (rows never change).
        self._columns: dict[str, Any] = {}

    def _reserve(self, rows: int) -> None:
        capacity = self._normed.shape[0]
        if rows <= capacity:
            return
        size = max(rows, capacity * 2, 1024)
        normed = np.zeros((size, self._dimension), dtype=np.float32)
        normed[: self._n] = self._normed[: self._n]
        norms = np.zeros(size, dtype=np.float32)
        norms[: self._n] = self._norms[: self._n]
        live = np.zeros(size, dtype=bool)
        live[: self._n] = self._live[: self._n]
        self._normed, self._norms, self._live = normed, norms, live

    def _kill(self, record_id: str) -> None:
        row = self._rows.pop(record_id, None)
        if row is not None:
            self._live[row] = False

    def _apply(
        self,
        deleted: Sequence[str],
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: FloatMatrix,
    ) -> None:
        for record_id in deleted:
            self._kill(record_id)
        count = len(ids)
        if not count:
            return
        self._reserve(self._n + count)
        start, end = self._n, self._n + count
        norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
        self._normed[start:end] = vectors / norms[:, None]
        self._norms[start:end] = norms
        self._live[start:end] = True
        for offset, record_id in enumerate(ids):
            self._kill(record_id)
            self._rows[record_id] = start + offset
        self._ids.extend(ids)
        self._texts.extend(texts)
        self._metadata.extend(metadata)
        self._n = end

    # -- files ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        with _common.translated(
            self.provider, str(self._path), (OSError, ValueError, KeyError), _ADVICE
        ):
            yield

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        """This process's threads take turns (a mutex), processes too (flock), and the copy in
        memory is brought up to date with the manifest first."""
        with self._mutex, self._io():
            if self._lock_fd < 0:
                raise CompozyError(f"filesystem vector store {self._path} is closed")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                self._refresh()
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        try:
            manifest = json.loads((self._path / MANIFEST).read_bytes())
        except FileNotFoundError:
            return  # a new directory: __init__ writes the first manifest
        if manifest.get("format") != FORMAT:
            raise ConfigError(
                f"filesystem vector store {self._path}: {MANIFEST} has format "
                f"{manifest.get('format')!r}, this compozy reads format {FORMAT}"
            )
        stored = manifest["dimension"]
        if stored != self._dimension:
            raise ConfigError(
                f"filesystem vector store {self._path} holds vectors of dimension {stored}, but "
                f"it was opened with dimension {self._dimension} (expected {self._dimension}, "
                f"got {stored}); set the vector DB's dimension to {stored}, or give it another "
                "path (and ingest again)"
            )
        if manifest["version"] == self._version:
            return
        segments: list[str] = manifest["segments"]
        known = len(self._segments)
        if segments[:known] != self._segments:
            self._reset()  # compacted by another process: read everything again
            known = 0
        for name in segments[known:]:
            self._load_segment(name)
        self._segments = list(segments)
        self._version = manifest["version"]
        self._next_segment = manifest["next_segment"]

    def _load_segment(self, name: str) -> None:
        body = json.loads((self._path / f"{name}.json").read_bytes())
        vectors = np.load(self._path / f"{name}.npy", allow_pickle=False)
        self._apply(body["deleted"], body["ids"], body["texts"], body["metadata"], vectors)

    def _write_manifest(self, segments: list[str], *, next_segment: int, version: int) -> None:
        manifest = {
            "format": FORMAT,
            "dimension": self._dimension,
            "version": version,
            "next_segment": next_segment,
            "segments": segments,
        }
        temporary = self._path / f"{MANIFEST}.{os.getpid()}.{threading.get_ident()}.tmp"
        _write_file(temporary, lambda file: file.write(_json_bytes(manifest)))
        os.replace(temporary, self._path / MANIFEST)
        _fsync_dir(self._path)
        self._segments, self._version, self._next_segment = segments, version, next_segment

    def _write_segment(
        self,
        deleted: Sequence[str],
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        vectors: FloatMatrix,
    ) -> str:
        name = f"seg-{self._next_segment:08d}"
        body = {"ids": list(ids), "texts": list(texts), "metadata": list(metadata)}
        body["deleted"] = list(deleted)
        _write_file(self._path / f"{name}.npy", lambda file: np.save(file, vectors))
        _write_file(self._path / f"{name}.json", lambda file: file.write(_json_bytes(body)))
        return name

    def _commit(
        self,
        deleted: Sequence[str],
        ids: Sequence[str],
        texts: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: FloatMatrix,
    ) -> None:
        """Write one segment, publish it, apply it in memory; compact when due."""
        name = self._write_segment(deleted, ids, texts, metadata, vectors)
        self._write_manifest(
            [*self._segments, name], next_segment=self._next_segment + 1, version=self._version + 1
        )
        self._apply(deleted, ids, texts, metadata, vectors)
        live = len(self._rows)
        if len(self._segments) > MAX_SEGMENTS or self._n - live > max(live, 1024):
            self._compact()

    def _compact(self) -> None:
        rows = np.flatnonzero(self._live[: self._n])
        vectors = self._normed[rows] * self._norms[rows][:, None]
        ids = [self._ids[row] for row in rows]
        texts = [self._texts[row] for row in rows]
        metadata = [self._metadata[row] for row in rows]
        old = self._segments
        name = self._write_segment([], ids, texts, metadata, vectors)
        self._write_manifest([name], next_segment=self._next_segment + 1, version=self._version + 1)
        keep = {f"{name}.npy", f"{name}.json"}
        for stale in {*old, *(p.stem for p in self._path.glob("seg-*"))}:
            for suffix in (".npy", ".json"):
                if f"{stale}{suffix}" not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._path / f"{stale}{suffix}")
        segments, version, next_segment = self._segments, self._version, self._next_segment
        self._reset()
        self._apply([], ids, texts, metadata, vectors)
        self._segments, self._version, self._next_segment = segments, version, next_segment

    # -- the protocol --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def path(self) -> Path:
        return self._path

    def upsert(self, records: Sequence[Record]) -> None:
        checked, vectors = _common.check_records(records, self._dimension)
        if not checked:
            return
        with self._locked(exclusive=True):
            self._commit(
                [],
                [r.id for r in checked],
                [r.text for r in checked],
                [dict(r.metadata) for r in checked],
                vectors,
            )

    def _column(self, key: str) -> Any:
        column = self._columns.get(key, np.empty(0, dtype=object))
        if column.shape[0] < self._n:
            tail = np.empty(self._n - column.shape[0], dtype=object)
            for offset, metadata in enumerate(self._metadata[column.shape[0] : self._n]):
                if key in metadata:
                    tail[offset] = _common.typed_token(metadata[key])
            column = np.concatenate([column, tail])
            self._columns[key] = column
        return column

    def _matching_rows(self, where: Mapping[str, MetadataValue] | None) -> Any:
        """The live rows that match ``where``, ascending."""
        mask = self._live[: self._n].copy()
        for key, value in (where or {}).items():
            mask &= self._column(key)[: self._n] == _common.typed_token(value)
        return np.flatnonzero(mask)

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        min_score: float | None = None,
        where: Metadata | None = None,
    ) -> list[Match]:
        query, top_k, min_score = _common.check_search(vector, self._dimension, top_k, min_score)
        checked_where = _common.check_where(where)
        with self._locked(exclusive=False):
            if checked_where is None and len(self._rows) == self._n:
                candidates = None  # every row is live: no gather
            else:
                candidates = self._matching_rows(checked_where)
            found = _common.cosine_top(self._normed[: self._n], query, candidates, top_k, self._ids)
            return [
                Match(self._ids[row], score, self._texts[row], dict(self._metadata[row]))
                for row, score in found
                if min_score is None or score >= min_score
            ]

    def get(self, ids: Sequence[str]) -> list[Record]:
        wanted = _common.check_ids(ids)
        with self._locked(exclusive=False):
            records = []
            for record_id in wanted:
                row = self._rows.get(record_id)
                if row is not None:
                    vector = (self._normed[row] * self._norms[row]).tolist()
                    records.append(
                        Record(record_id, vector, self._texts[row], dict(self._metadata[row]))
                    )
            return records

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        wanted, checked_where = _common.check_delete(ids, where)
        with self._locked(exclusive=True):
            if wanted is None:
                doomed = [self._ids[int(row)] for row in self._matching_rows(checked_where)]
            else:
                doomed = [
                    record_id
                    for record_id in dict.fromkeys(wanted)
                    if record_id in self._rows
                    and _common.matches_where(self._metadata[self._rows[record_id]], checked_where)
                ]
            if doomed:
                empty = np.zeros((0, self._dimension), dtype=np.float32)
                self._commit(doomed, [], [], [], empty)

    def count(self, where: Metadata | None = None) -> int:
        checked_where = _common.check_where(where)
        with self._locked(exclusive=False):
            if checked_where is None:
                return len(self._rows)
            return int(self._matching_rows(checked_where).size)

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
            self._reset()

    def __repr__(self) -> str:
        return f"FilesystemVectorStore({str(self._path)!r}, dimension={self._dimension})"
