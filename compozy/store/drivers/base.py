"""What differs between the two databases, behind one small interface: the driver.

``database.driver`` in the configuration names one (``DRIVERS``); every driver is built from
the ``DatabaseConfig`` alone and covers connecting, how a write transaction begins and
serialises, row locks, upserts, the bound-parameter limit, how a migration runs, and error
translation. The repositories are one implementation over this interface (docs/architecture.md).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from compozy.config import DatabaseConfig
from compozy.errors import (
    CompozyError,
    ConflictError,
    ConstraintViolation,
    StoreUnavailable,
    ValidationError,
)

MIGRATION_LOCK = 0x6D696772617465  # "migrate": one migrating process at a time
WRITE_OPTION = "compozy_write"
"""Connection execution option: the transaction about to begin will write."""


class UniqueViolation(ConflictError):
    """A UNIQUE or PRIMARY KEY constraint refused a write; repositories refine it by name."""

    def __init__(self, message: str, constraint: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint


class ForeignKeyViolation(ConstraintViolation):
    """A foreign key refused a write (SQLite does not say which one)."""

    def __init__(self, message: str, constraint: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint


class CheckViolation(ConstraintViolation):
    """A CHECK or NOT NULL constraint refused a write."""

    def __init__(self, message: str, constraint: str | None) -> None:
        super().__init__(message)
        self.constraint = constraint


class Driver(ABC):
    """One database's behaviour; one instance per Store, built from its ``DatabaseConfig``."""

    name: str
    """The value of ``database.driver`` that selects this driver."""
    max_bind_params: int
    driver_error: type[Exception]
    """Base class of the driver's exceptions (raised as-is by hooks that bypass SQLAlchemy)."""
    begin_write: ClassVar[str] = "BEGIN"
    """What begins a write transaction sent by hand (``write_transaction``)."""
    snapshot_options: ClassVar[Mapping[str, Any]] = {}
    """Connection options for a read-only transaction that sees one snapshot of the whole
    database from its first read to its end (``compozy export``)."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config

    @abstractmethod
    def create_engine(self) -> Engine:
        """An engine with this driver's connect and begin hooks installed."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the database is (a path, ``in-memory``, ``host:port/name``); no password."""

    def describe(self) -> str:
        """The driver and the location, for messages: ``sqlite /srv/compozy.db``."""
        return f"{self.name} {self.location}"

    def files(self) -> list[Path]:
        """The files that make up the database on this machine (none for a server)."""
        return []

    def backup(self, engine: Engine, dest: Path) -> None:
        """Write a consistent copy of the database to the new file ``dest`` while others keep
        using it; ``ValidationError`` where the driver cannot."""
        raise ValidationError(
            f"compozy backup copies SQLite databases; {self.describe()} is a server: use "
            "pg_dump (e.g. `pg_dump -Fc -f compozy.dump DBNAME`) or `compozy export`"
        )

    @abstractmethod
    def guard(self, *, write: bool) -> AbstractContextManager[None]:
        """Held around a whole top-level transaction (in-process serialisation, if any)."""

    def autocommit(self, conn: PoolProxiedConnection) -> AbstractContextManager[None]:
        """Run ``conn``'s statements each in its own transaction while the block runs, with no
        BEGIN or COMMIT sent (for a read that is one statement)."""
        return nullcontext()  # SQLite's connections are in autocommit mode already

    @contextmanager
    def read_transaction(self, conn: PoolProxiedConnection) -> Iterator[None]:
        """A read transaction on ``conn`` (in autocommit mode), begun and committed by hand."""
        raw: Any = conn.driver_connection
        raw.execute("BEGIN")
        try:
            yield
        finally:
            raw.execute("COMMIT")

    @contextmanager
    def write_transaction(self, conn: PoolProxiedConnection) -> Iterator[None]:
        """A write transaction on ``conn`` (in autocommit mode), begun and ended by hand:
        committed when the block ends, rolled back when it raises."""
        raw: Any = conn.driver_connection
        raw.execute(self.begin_write)
        try:
            yield
        except BaseException:
            try:
                raw.execute("ROLLBACK")
            except self.driver_error:  # the connection is gone: it must not be pooled again
                conn.invalidate()
            raise
        raw.execute("COMMIT")

    @abstractmethod
    def migration(self, conn: Connection) -> AbstractContextManager[None]:
        """Run a migration's one transaction on ``conn``: begin it, make it safe for this
        database while the block runs, check what must hold, and commit."""

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_update``/``excluded`` on this driver."""
        raise NotImplementedError

    @abstractmethod
    def in_list(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        """``column`` is one of the values of the list bound as ``name``: one parameter however
        long the list (no batches, a statement text of its own for every length)."""

    def for_update(self, stmt: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        """Lock the selected rows against other writers until the transaction ends; with
        ``skip_locked``, rows another transaction holds are left out instead of waited for."""
        return stmt

    def for_share(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """Lock the selected rows against writers (not against other sharers) until the
        transaction ends."""
        return stmt

    @abstractmethod
    def serialize(self, conn: Connection, key: int) -> None:
        """Serialise transactions that pass the same ``key`` (until commit or rollback)."""

    def translate(self, error: Exception) -> CompozyError:
        """Turn any SQLAlchemy or driver error into a ``compozy.errors`` type."""
        if isinstance(error, self.driver_error):
            error = sa_exc.DBAPIError.instance(None, None, error, self.driver_error)
        if isinstance(error, sa_exc.TimeoutError):
            return StoreUnavailable(
                f"no database connection became free in time ({self.describe()}): "
                "raise database.pool_size or lower concurrency"
            )
        if isinstance(error, sa_exc.DBAPIError):
            translated = self.translate_driver_error(error)
            if translated is not None:
                return translated
            return CompozyError(f"database error ({self.describe()}): {first_line(error.orig)}")
        return CompozyError(f"database error ({self.describe()}): {first_line(error)}")

    @abstractmethod
    def translate_driver_error(self, error: sa_exc.DBAPIError) -> CompozyError | None:
        """Driver-specific part of ``translate``; None falls back to a generic error."""


def first_line(error: BaseException | None) -> str:
    """The first line of an error's text, without SQLAlchemy's statement and parameters."""
    text = str(error or "").strip()
    text = re.sub(r"\s*\[SQL:.*", "", text, flags=re.DOTALL)
    return text.splitlines()[0] if text else type(error).__name__


def unique_constraint_names(metadata: sa.MetaData) -> dict[str, str]:
    """Map SQLite's ``table.col, table.col`` text of each unique/primary key to its name."""
    names: dict[str, str] = {}
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint):
                assert isinstance(constraint.name, str)
                key = ", ".join(f"{table.name}.{c.name}" for c in constraint.columns)
                names[key] = constraint.name
    return names


def iter_batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Split ``items`` into lists of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
