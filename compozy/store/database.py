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
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from compozy.errors import CompozyError, StoreBusy, StoreUnavailable
from compozy.store.drivers.base import WRITE_OPTION, Driver

T = TypeVar("T")

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

    def statement(self, name: str, build: Callable[[Driver], Any]) -> Any:
        """A statement built once per database: building one costs more than running it."""
        found = self._statements.get(name)
        if found is None:
            found = self._statements[name] = build(self.driver)
        return found

    @contextmanager
    def translate(self) -> Iterator[None]:
        """Re-raise SQLAlchemy and driver errors as ``compozy.errors`` types."""
        try:
            yield
        except sa_exc.StatementError as error:
            if isinstance(error.orig, CompozyError):
                # A check in a column type (a timestamp out of range, say), which SQLAlchemy
                # wrapped while binding the parameters: the user's error, as it was raised.
                raise error.orig from None
            raise self.driver.translate(error) from error
        except (sa_exc.SQLAlchemyError, self.driver.driver_error) as error:
            raise self.driver.translate(error) from error

    @contextmanager
    def unit(
        self, *, write: bool, bound: Connection | None = None, need_transaction: str = ""
    ) -> Iterator[Connection]:
        """A connection for one repository call.

        ``bound`` pins the call to a given transaction's connection; ``need_transaction`` names
        a method that may only run inside ``Store.transaction()``.
        """
        current = bound if bound is not None else self._current.get()
        if current is None:
            if need_transaction:
                raise CompozyError(
                    f"{need_transaction} locks a row until the transaction ends, so it only runs "
                    "inside `with store.transaction():`"
                )
            with self.connect(write=write) as conn, self._joined(conn):
                yield conn
            return
        with self.translate():
            if write:
                with current.begin_nested():
                    yield current
            else:
                yield current

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[Connection]:
        """A new connection in a new transaction: committed on exit, rolled back on error."""
        if self.closed:
            raise StoreUnavailable(f"the store for {self.driver.describe()} is closed")
        with self.driver.guard(write=write), self.translate(), self.engine.connect() as conn:
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
