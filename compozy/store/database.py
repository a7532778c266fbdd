"""Units of work: how a repository call gets a connection and a transaction.

A call either joins the transaction that the current thread (or asyncio task) is in (opened
with ``Store.transaction()`` or by an enclosing call) or runs in a transaction of its
own. Joined writes run in
a savepoint, so a refused write (a ``ConflictError``, say) that the caller catches leaves the
surrounding transaction usable on both databases (PostgreSQL would otherwise abort it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.pool import PoolProxiedConnection

from compozy.errors import CompozyError, StoreBusy, StoreUnavailable
from compozy.store.drivers.base import WRITE_OPTION, Driver
from compozy.store.prepared import Prepared, PreparedRow

T = TypeVar("T")
AnyConnection = Connection | PoolProxiedConnection
"""A SQLAlchemy connection, or a pooled driver connection (``Database.select``)."""

RETRY_ATTEMPTS = 6
"""How often ``run_in_transaction`` runs a transaction that keeps losing transient conflicts."""
_RETRY_BASE = 0.01
_RETRY_CAP = 0.5


class Database:
    """An engine, its driver and the transaction each thread or task is in."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.engine = driver.create_engine()
        self._current: ContextVar[Connection | None] = ContextVar(
            f"compozy_transaction_{id(self)}", default=None
        )
        self.closed = False
        self._statements: dict[str, Any] = {}
        self._prepared: dict[tuple[int, tuple[str, ...]], tuple[sa.ClauseElement, Prepared]] = {}
        self.recorders: list[Callable[[str], None]] = []
        """Called with each statement's SQL that runs through ``fetch``/``run`` (query logs)."""

    def statement(self, name: str, build: Callable[[Driver], Any]) -> Any:
        """A statement built once per database: building one costs more than running it."""
        found = self._statements.get(name)
        if found is None:
            found = self._statements[name] = build(self.driver)
        return found

    def select(
        self, stmt: sa.ClauseElement, params: dict[str, Any], bound: Connection | None = None
    ) -> list[PreparedRow]:
        """The rows of a read that is one fixed statement: in the transaction the call joins,
        else on a pooled driver connection in autocommit mode (one statement sees one
        snapshot), without a SQLAlchemy connection or a transaction's round trips."""
        current = bound if bound is not None else self._current.get()
        if current is not None:
            with self.translate():
                return self.fetch(current, stmt, params)
        if self.closed:
            raise StoreUnavailable(f"the store for {self.driver.describe()} is closed")
        # The hottest path of all: translate() written out, without a generator's cost.
        try:
            with self.driver.guard(write=False):
                pooled = self.engine.raw_connection()
                try:
                    with self.driver.autocommit(pooled):
                        return self.fetch(pooled, stmt, params)
                finally:
                    pooled.close()
        except (sa_exc.SQLAlchemyError, self.driver.driver_error) as error:
            self._raise_translated(error)

    def select_together(
        self,
        reads: list[tuple[sa.ClauseElement, dict[str, Any]]],
        bound: Connection | None = None,
    ) -> list[list[PreparedRow]]:
        """The rows of each of several fixed statements, read in one transaction (one snapshot):
        the one the call joins, else one begun by hand on a pooled driver connection, which
        PostgreSQL runs in pipeline mode (``Driver.read_transaction``)."""
        current = bound if bound is not None else self._current.get()
        if current is not None:
            with self.translate():
                return [self.fetch(current, stmt, params) for stmt, params in reads]
        with self._pooled(write=False) as pooled, self.driver.read_transaction(pooled):
            ran = [self._run(pooled, stmt, params) for stmt, params in reads]
            return [_rows(prepared, cursor) for prepared, cursor in ran]

    @contextmanager
    def write_unit(self, bound: Connection | None = None) -> Iterator[AnyConnection]:
        """A write of fixed statements only (``fetch``/``run``/``run_many``): in the transaction
        the call joins (in a savepoint, as ``unit`` does), else in a write transaction begun by
        hand on a pooled driver connection, without a SQLAlchemy connection."""
        current = bound if bound is not None else self._current.get()
        if current is not None:
            with self.translate(), current.begin_nested():
                yield current
            return
        with self._pooled(write=True) as pooled, self.driver.write_transaction(pooled):
            yield pooled

    @contextmanager
    def _pooled(self, *, write: bool) -> Iterator[PoolProxiedConnection]:
        """A pooled driver connection in autocommit mode, under the driver's guard, its errors
        translated. (``select`` spells this out: it is the hottest path.)"""
        if self.closed:
            raise StoreUnavailable(f"the store for {self.driver.describe()} is closed")
        with self.driver.guard(write=write), self.translate():
            pooled = self.engine.raw_connection()
            try:
                with self.driver.autocommit(pooled):
                    yield pooled
            finally:
                pooled.close()

    def fetch(
        self,
        conn: Connection | PoolProxiedConnection,
        stmt: sa.ClauseElement,
        params: dict[str, Any],
    ) -> list[PreparedRow]:
        """The rows of a fixed statement (a module constant or a ``statement``), run on the
        driver connection under ``conn`` (see ``compozy.store.prepared``)."""
        return _rows(*self._run(conn, stmt, params))

    def run(
        self,
        conn: Connection | PoolProxiedConnection,
        stmt: sa.ClauseElement,
        params: dict[str, Any],
    ) -> int:
        """Run a fixed statement that returns no rows; the number of rows it changed."""
        _prepared, cursor = self._run(conn, stmt, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(
        self, conn: AnyConnection, stmt: sa.ClauseElement, rows: list[dict[str, Any]]
    ) -> None:
        """Run a fixed statement once per parameter set in ``rows`` (the driver's executemany),
        in order; every set has the same keys."""
        prepared = self._prepare(stmt, rows[0])
        for record in self.recorders:
            for _row in rows:  # the driver sends the statement once per row
                record(prepared.sql)
        pooled = conn.connection if isinstance(conn, Connection) else conn
        cursor: Any = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(prepared.sql, [prepared.parameters(row) for row in rows])
        except self.driver.driver_error as error:
            self._invalidate_if_gone(pooled, error, cursor)
            raise
        finally:
            cursor.close()

    def _prepare(self, stmt: sa.ClauseElement, params: dict[str, Any]) -> Prepared:
        # An INSERT's columns are the parameters given, as when SQLAlchemy runs it.
        key = (id(stmt), tuple(params))
        found = self._prepared.get(key)
        if found is None:
            # The statement is kept with its compiled form, so its id is never reused.
            prepared = Prepared(stmt, self.engine.dialect, list(params))
            found = self._prepared[key] = (stmt, prepared)
        return found[1]

    def _invalidate_if_gone(
        self, pooled: PoolProxiedConnection, error: Exception, cursor: Any
    ) -> None:
        dialect = self.engine.dialect
        if dialect.is_disconnect(error, pooled.driver_connection, cursor):  # type: ignore[arg-type]
            pooled.invalidate(error)  # as SQLAlchemy does: the connection is not pooled again

    def _run(
        self,
        conn: Connection | PoolProxiedConnection,
        stmt: sa.ClauseElement,
        params: dict[str, Any],
    ) -> tuple[Prepared, Any]:
        prepared = self._prepare(stmt, params)
        pooled = conn.connection if isinstance(conn, Connection) else conn
        for record in self.recorders:
            record(prepared.sql)
        cursor: Any = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(prepared.sql, prepared.parameters(params))
        except self.driver.driver_error as error:
            cursor.close()
            self._invalidate_if_gone(pooled, error, cursor)
            raise
        return prepared, cursor

    @contextmanager
    def translate(self) -> Iterator[None]:
        """Re-raise SQLAlchemy and driver errors as ``compozy.errors`` types."""
        try:
            yield
        except (sa_exc.SQLAlchemyError, self.driver.driver_error) as error:
            self._raise_translated(error)

    def _raise_translated(self, error: Exception) -> NoReturn:
        if isinstance(error, sa_exc.StatementError) and isinstance(error.orig, CompozyError):
            # A check in a column type (a timestamp out of range, say), which SQLAlchemy
            # wrapped while binding the parameters: the user's error, as it was raised.
            raise error.orig from None
        raise self.driver.translate(error) from error

    @contextmanager
    def unit(
        self,
        *,
        write: bool,
        bound: Connection | None = None,
        need_transaction: str = "",
        single: bool = False,
    ) -> Iterator[Connection]:
        """A connection for one repository call.

        ``bound`` pins the call to a given transaction's connection; ``need_transaction`` names
        a method that may only run inside ``Store.transaction()``; ``single``: a read that is
        one statement, which needs no transaction of its own (it sees one snapshot anyway).
        """
        current = bound if bound is not None else self._current.get()
        if current is None:
            if need_transaction:
                raise CompozyError(
                    f"{need_transaction} locks a row until the transaction ends, so it only runs "
                    "inside `with store.transaction():`"
                )
            with self.connect(write=write, single=single and not write) as conn, self._joined(conn):
                yield conn
            return
        with self.translate():
            if write:
                with current.begin_nested():
                    yield current
            else:
                yield current

    @contextmanager
    def connect(self, *, write: bool, single: bool = False) -> Iterator[Connection]:
        """A new connection in a new transaction: committed on exit, rolled back on error.

        ``single`` (a read of one statement): no transaction, so no BEGIN and COMMIT round
        trips; the statement runs in the driver's autocommit mode."""
        if self.closed:
            raise StoreUnavailable(f"the store for {self.driver.describe()} is closed")
        with self.driver.guard(write=write), self.translate(), self.engine.connect() as conn:
            if single:
                with self.driver.autocommit(conn.connection):
                    yield conn
                return
            conn.execution_options(**{WRITE_OPTION: write})
            with conn.begin():
                yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Open a transaction this thread's calls join, or a savepoint inside the current one."""
        current = self._current.get()
        if current is not None:
            with self.translate(), current.begin_nested():
                yield current
            return
        with self.connect(write=True) as conn, self._joined(conn):
            yield conn

    def run_in_transaction(
        self, work: Callable[[Connection], T], *, attempts: int = RETRY_ATTEMPTS
    ) -> T:
        """``work(conn)`` in a transaction, run again after a rolled-back ``StoreBusy``.

        The one place where transient conflicts are retried: a rolled-back transaction left
        nothing behind, so running all of it again is safe. Waits between attempts grow
        exponentially with full jitter (so racing writers spread out) up to half a second.
        Inside an open transaction, ``work`` joins it and is not retried here: the
        outermost owner of the transaction is the one that can run it again.
        """
        if self._current.get() is not None:
            with self.transaction() as conn:
                return work(conn)
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as conn:
                    return work(conn)
            except StoreBusy:
                if attempt == attempts:
                    raise
            time.sleep(random.uniform(0, min(_RETRY_CAP, _RETRY_BASE * 2**attempt)))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _joined(self, conn: Connection) -> Iterator[None]:
        # Calls made while this transaction is open (a transformer calling back into the
        # store, say) join it instead of waiting for a lock that this thread holds.
        token = self._current.set(conn)
        try:
            yield
        finally:
            self._current.reset(token)

    def close(self) -> None:
        """Close every pooled connection; later calls raise ``StoreUnavailable``."""
        self.closed = True
        self.engine.dispose()


def _rows(prepared: Prepared, cursor: Any) -> list[PreparedRow]:
    try:
        return [prepared.row(row) for row in cursor.fetchall()]
    finally:
        cursor.close()
