"""What differs between the two databases, behind one small interface (DESIGN "Why one
repository implementation"): connecting, how a write transaction begins and serialises, row
locks, upserts, the bound-parameter limit, migration guards and error translation.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from compozy.errors import CompozyError, ConflictError, ConstraintViolation, StoreUnavailable

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


class Dialect(ABC):
    """One database's behaviour; one instance per Store."""

    name: str
    max_bind_params: int
    driver_error: type[Exception]
    """Base class of the driver's exceptions (raised as-is by hooks that bypass SQLAlchemy)."""

    @abstractmethod
    def create_engine(self) -> Engine:
        """An engine with this dialect's connect and begin hooks installed."""

    @abstractmethod
    def describe(self) -> str:
        """Where the database is, for messages; never contains a password."""

    @abstractmethod
    def guard(self, *, write: bool) -> AbstractContextManager[None]:
        """Held around a whole top-level transaction (in-process serialisation, if any)."""

    @abstractmethod
    def migration_guard(self, conn: Connection) -> AbstractContextManager[None]:
        """Held around a migration run on ``conn`` (before its transaction begins)."""

    def insert(self, table: sa.Table) -> Any:
        """An INSERT that supports ``on_conflict_do_update``/``excluded`` on this dialect."""
        raise NotImplementedError

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
        """Dialect-specific part of ``translate``; None falls back to a generic error."""


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
