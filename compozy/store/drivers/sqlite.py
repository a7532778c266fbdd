"""SQLite: a file or a private in-memory database, through the stdlib ``sqlite3`` driver.

Python 3.11's ``sqlite3`` opens transactions itself ("legacy" mode), which silently breaks
savepoints and loses updates under concurrency. So every connection gets
``isolation_level = None`` and the begin hook below emits ``BEGIN IMMEDIATE`` for write
transactions (taking the write lock up front, where ``busy_timeout`` applies) and a deferred
``BEGIN`` for reads (the recipe SQLAlchemy documents for pysqlite).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool, StaticPool

from compozy.config import MEMORY_PATH, DatabaseConfig
from compozy.errors import CompozyError, ConfigError, StoreBusy, StoreUnavailable, ValidationError
from compozy.store.drivers.base import (
    WRITE_OPTION,
    CheckViolation,
    Driver,
    ForeignKeyViolation,
    UniqueViolation,
    first_line,
    unique_constraint_names,
)
from compozy.store.tables import metadata
from compozy.store.types import JSONValue

MEMORY = MEMORY_PATH
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
"""Files SQLite may create next to a database file."""
_UNIQUE_NAMES = unique_constraint_names(metadata)


class SQLiteDriver(Driver):
    """A SQLite database file (WAL) or ``:memory:`` (one connection, private to this Store)."""

    name = "sqlite"
    begin_write = "BEGIN IMMEDIATE"  # the write lock up front, where busy_timeout applies
    # Long IN lists are split into batches this size; far below SQLite's parameter limit.
    max_bind_params = 500
    driver_error = sqlite3.Error

    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        if not config.path:
            raise ConfigError("database.path is required with database.driver: sqlite")
        self.path = config.path
        self.memory = config.path == MEMORY
        self.busy_timeout = config.busy_timeout
        self._connection: sqlite3.Connection | None = None
        # In memory there is one connection, so every transaction takes this lock. For a file,
        # only writers take it: threads of one process then queue here, in order, instead of
        # polling SQLite's busy handler; other processes are still handled by busy_timeout.
        self._lock = threading.Lock()

    @classmethod
    def over_connection(cls, connection: sqlite3.Connection, busy_timeout: float) -> SQLiteDriver:
        """An in-memory database on an already-open connection, which the driver takes over."""
        driver = cls(DatabaseConfig(driver="sqlite", path=MEMORY, busy_timeout=busy_timeout))
        driver._connection = connection
        return driver

    @property
    def location(self) -> str:
        return "in-memory" if self.memory else self.path

    def files(self) -> list[Path]:
        if self.memory:
            return []
        return [Path(self.path + suffix) for suffix in ("", *SIDECAR_SUFFIXES)]

    def create_engine(self) -> Engine:
        if self.memory:
            raw = self._connection or sqlite3.connect(MEMORY, check_same_thread=False)
            engine = sa.create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
        else:
            self._create_file()
            engine = sa.create_engine(
                sa.URL.create("sqlite", database=self.path),
                poolclass=QueuePool,
                pool_size=self.config.pool_size,
                max_overflow=self.config.max_overflow,
                pool_timeout=max(self.busy_timeout, 1.0),
                connect_args={"check_same_thread": False, "timeout": self.busy_timeout},
            )
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "begin", _on_begin)
        return engine

    def _create_file(self) -> None:
        """Make parent folders and create a new database file readable by its owner only."""
        path = Path(self.path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                with contextlib.suppress(FileExistsError):  # another process was faster
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                    # WAL is a property of the file: set it now, before anyone else connects.
                    with contextlib.closing(sqlite3.connect(path)) as raw:
                        raw.execute("PRAGMA journal_mode=WAL")
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the SQLite database {self.path}: {exc.strerror}; "
                "choose a writable database.path"
            ) from exc

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            if not self.memory:
                if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._enable_wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    def _enable_wal(self, cursor: sqlite3.Cursor) -> None:
        # Switching a file to WAL needs an exclusive lock, and SQLite answers "locked" at once,
        # without its busy handler, while another connection writes; so retry until the timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def backup(self, engine: Engine, dest: Path) -> None:
        # SQLite's online backup copies every page in one step inside one read transaction:
        # a consistent copy, and in WAL mode writers are not held up while it runs.
        with self.guard(write=False), engine.connect() as conn:
            source = conn.connection.driver_connection
            assert isinstance(source, sqlite3.Connection)
            try:
                with contextlib.closing(sqlite3.connect(dest)) as target:
                    source.backup(target)
                    target.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as error:
                # The source was read; it is the new file that could not be written.
                raise ValidationError(f"cannot write the backup {dest}: {error}") from None

    def guard(self, *, write: bool) -> AbstractContextManager[None]:
        if not (self.memory or write):
            return contextlib.nullcontext()  # readers of a file do not queue
        return self._locked()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._lock.acquire(timeout=self.busy_timeout):
            raise StoreBusy(
                f"{self.describe()} stayed busy for more than {self.busy_timeout:g}s: "
                "raise database.busy_timeout or lower concurrency"
            )
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def migration(self, conn: Connection) -> Iterator[None]:
        # Table rewrites (create new, copy, drop old, rename) must not fire ON DELETE CASCADE
        # into child rows, so foreign keys are off while migrating. The pragma is ignored inside
        # a transaction, so it goes to the driver connection before the migration begins, and
        # the foreign keys are checked before it commits.
        raw = conn.connection.driver_connection
        assert raw is not None
        assert not conn.in_transaction()
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise CompozyError(
                        f"migration left {len(broken)} rows whose foreign keys point nowhere "
                        f"(first in table {broken[0][0]}); nothing was changed"
                    )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")

    def insert(self, table: sa.Table) -> Any:
        return sqlite_dialect.insert(table)

    def in_list(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        # The list travels as one JSON array, unpacked by SQLite's json_each.
        values = sa.func.json_each(sa.bindparam(name, type_=JSONValue())).table_valued("value")
        return column.in_(sa.select(values.c.value))

    def serialize(self, conn: Connection, key: int) -> None:
        pass  # write transactions begin IMMEDIATE: they are serialised already

    def translate_driver_error(self, error: sa_exc.DBAPIError) -> CompozyError | None:
        message = first_line(error.orig)
        if isinstance(error.orig, sqlite3.IntegrityError):
            return _integrity_error(message)
        if isinstance(error.orig, sqlite3.OperationalError):
            lowered = message.lower()
            if "locked" in lowered or "busy" in lowered:
                return StoreBusy(
                    f"{self.describe()} stayed busy for more than {self.busy_timeout:g}s: "
                    "raise database.busy_timeout or lower concurrency"
                )
            if "no such table" in lowered:
                return CompozyError(
                    f"{self.describe()} has no compozy schema ({message}): run `compozy migrate up`"
                )
            if "unable to open" in lowered or "disk i/o" in lowered or "readonly" in lowered:
                return StoreUnavailable(
                    f"cannot use {self.describe()}: {self._unwritable() or message}"
                )
        return None

    def _unwritable(self) -> str | None:
        """Why this database file cannot be written, with what to do; None if it can be (or
        for a database in memory), when SQLite's own message is all there is to say."""
        if self.memory:
            return None
        path = Path(self.path)
        folder = path.parent
        sidecars = [Path(self.path + suffix) for suffix in ("-wal", "-shm")]
        if not os.access(folder, os.W_OK | os.X_OK) and not all(f.exists() for f in sidecars):
            return (
                f"its folder {folder} is read-only, and SQLite's write-ahead log (WAL) needs "
                f"to create {path.name}-wal and {path.name}-shm next to the database, even to "
                "read it; make the folder writable for the user compozy runs as, or move the "
                "database to a writable folder and point database.path at it"
            )
        for file in (path, *sidecars):
            if file.exists() and not os.access(file, os.W_OK):
                return (
                    f"the file {file} is read-only; make it writable for the user compozy runs as"
                )
        return None


def _on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    # Straight to the driver: SQLAlchemy's own execute path would triple a read's cost here.
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")


def _integrity_error(message: str) -> CompozyError:
    head, _, detail = message.partition(": ")
    if head.startswith("UNIQUE"):
        return UniqueViolation(message, _UNIQUE_NAMES.get(detail))
    if head.startswith("FOREIGN KEY"):
        return ForeignKeyViolation(message, None)
    # CHECK constraint failed: <name>; NOT NULL constraint failed: <table.column>
    return CheckViolation(message, detail or None)
