"""PostgreSQL through psycopg 3: a connection pool, ``FOR UPDATE`` row locks and advisory locks."""

from __future__ import annotations

import logging
import math
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import PoolProxiedConnection

from compozy.config import DatabaseConfig
from compozy.errors import CompozyError, ConfigError, StoreBusy, StoreUnavailable
from compozy.store.drivers.base import (
    MIGRATION_LOCK,
    CheckViolation,
    Driver,
    ForeignKeyViolation,
    UniqueViolation,
    first_line,
)
from compozy.store.types import json_text

_DRIVER = "postgresql+psycopg"
_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}
_BUSY_STATES = {"40P01", "40001", "55P03", "57014"}  # deadlock, serialization, lock, cancel


class _PipelineNoise(logging.Filter):
    """psycopg logs "error ignored terminating <Pipeline>" when a statement of an executemany
    batch fails; the error itself reaches the store, which translates it, so the line only
    repeats it (on stderr, before the command's own message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error ignored terminating")


logging.getLogger("psycopg").addFilter(_PipelineNoise())


class PostgresDriver(Driver):
    """A PostgreSQL server reached through a pooled psycopg engine."""

    name = "postgres"
    max_bind_params = 10_000
    driver_error = psycopg.Error
    snapshot_options = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}

    def __init__(self, config: DatabaseConfig) -> None:
        super().__init__(config)
        self.url = build_url(config)

    @property
    def location(self) -> str:
        url = self.url
        host = url.host or url.query.get("host") or "localhost"
        return f"{host}:{url.port or 5432}/{url.database or ''}"

    def create_engine(self) -> Engine:
        cfg = self.config
        engine = sa.create_engine(
            self.url,
            pool_size=cfg.pool_size,
            max_overflow=cfg.max_overflow,
            pool_timeout=max(cfg.connect_timeout, 1.0),
            json_serializer=json_text,
            connect_args={
                # libpq counts whole seconds and treats values below 2 as 2
                "connect_timeout": max(2, math.ceil(cfg.connect_timeout)),
                "application_name": "compozy",
            },
        )
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "checkout", _on_checkout)
        return engine

    @contextmanager
    def guard(self, *, write: bool) -> Iterator[None]:
        yield  # the server serialises; nothing to do in-process

    @contextmanager
    def autocommit(self, conn: PoolProxiedConnection) -> Iterator[None]:
        raw = conn.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.autocommit = True  # client-side only: no round trip
        try:
            yield
        finally:
            if not raw.closed:
                raw.autocommit = False

    @contextmanager
    def read_transaction(self, conn: PoolProxiedConnection) -> Iterator[None]:
        # Pipeline mode: BEGIN and the statements go out together when the first result is
        # fetched, COMMIT when the block ends: two round trips instead of four or more.
        raw = conn.driver_connection
        assert isinstance(raw, psycopg.Connection)
        with raw.pipeline(), super().read_transaction(conn):
            yield

    @contextmanager
    def migration(self, conn: Connection) -> Iterator[None]:
        # DDL is transactional here; the advisory lock makes a second migrating process wait
        # for this one, then find the work done.
        with conn.begin():
            self.serialize(conn, MIGRATION_LOCK)
            yield

    def insert(self, table: sa.Table) -> Any:
        return postgresql.insert(table)

    def in_list(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        # = ANY(one array parameter), typed like the column so its index applies.
        values = sa.bindparam(name, type_=postgresql.ARRAY(column.type))
        return column == sa.func.any(values)

    def for_update(self, stmt: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        # FOR NO KEY UPDATE: it conflicts with other writers of the row but not with the
        # FOR KEY SHARE lock that a foreign-key check takes on it (a task insert on its
        # workflow row), so "insert a task, then lock its workflow" cannot deadlock.
        return stmt.with_for_update(key_share=True, skip_locked=skip_locked)

    def for_share(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt.with_for_update(read=True)

    def serialize(self, conn: Connection, key: int) -> None:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def translate_driver_error(self, error: sa_exc.DBAPIError) -> CompozyError | None:
        orig = error.orig
        message = first_line(orig)
        if self.url.password:
            message = message.replace(self.url.password, "***")
        state = getattr(orig, "sqlstate", None) or ""
        constraint = None
        if isinstance(orig, psycopg.Error) and orig.diag is not None:
            constraint = orig.diag.constraint_name
        if state == "23505":
            return UniqueViolation(message, constraint)
        if state == "23503":
            return ForeignKeyViolation(message, constraint)
        if state in ("23514", "23502"):
            return CheckViolation(message, constraint)
        if state in _BUSY_STATES:
            return StoreBusy(f"{self.describe()} is busy ({message}); retry the operation")
        if state == "42P01":
            return CompozyError(
                f"{self.describe()} has no compozy schema ({message}): run `compozy migrate up`"
            )
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError) or state.startswith(
            "08"
        ):
            return StoreUnavailable(f"cannot reach {self.describe()}: {message}")
        return None


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Timestamps come back in the session's zone; UTC keeps every value in datetime's range
    # (9999-12-31 23:00 UTC is year 10000 east of Greenwich) and saves a conversion.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    dbapi_connection.commit()


def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    # What a pre-ping protects against (a server restarted, a backend terminated, an idle
    # session timed out) closes the connection from the server's side, and the closing
    # leaves data on the idle connection's socket: look for it, without a round trip. The
    # pool replaces a connection this refuses and tries again.
    if _is_dead(dbapi_connection):
        raise sa_exc.DisconnectionError("the server closed the connection")


def _is_dead(connection: psycopg.Connection[Any]) -> bool:
    if connection.closed or connection.broken:
        return True
    ready, _, _ = select.select([connection.fileno()], [], [], 0)
    if not ready:
        return False
    # An idle connection with something to read: the server's goodbye, or (rarely) a notice
    # or a changed parameter. Only then is a round trip spent, to tell which.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        connection.rollback()
    except psycopg.Error:
        return True
    return False


def build_url(config: DatabaseConfig) -> sa.URL:
    """The SQLAlchemy URL for ``config``: its conn_string (URL or libpq keywords) or its fields."""
    if config.conn_string is not None:
        raw = config.conn_string.get_secret_value().strip()
        if "://" in raw:
            try:
                url = sa.make_url(raw)
            except (sa_exc.ArgumentError, ValueError):
                raise ConfigError(
                    "database.conn_string is not a valid URL: use postgresql://user:pass@host:5432/db"
                ) from None
            if url.drivername not in _SCHEMES:
                raise ConfigError(
                    f"database.conn_string has the scheme {url.drivername!r}; "
                    "use postgresql:// (or set database.driver: sqlite with database.path)"
                )
            return url.set(drivername=_DRIVER)
        try:
            params: dict[str, Any] = conninfo_to_dict(raw)
        except psycopg.ProgrammingError:
            raise ConfigError(
                "database.conn_string is neither a postgresql:// URL nor libpq key=value pairs"
            ) from None
        port = _libpq_port(params.pop("port", None))
        return sa.URL.create(
            _DRIVER,
            username=params.pop("user", None),
            password=params.pop("password", None),
            host=params.pop("host", None),
            port=port,
            database=params.pop("dbname", None),
            query={k: str(v) for k, v in params.items()},
        )
    password = config.password.get_secret_value() if config.password is not None else None
    return sa.URL.create(
        _DRIVER,
        username=config.user,
        password=password,
        host=config.host,
        port=config.port,
        database=config.name,
        query={"sslmode": config.ssl_mode} if config.ssl_mode else {},
    )


def _libpq_port(value: Any) -> int | None:
    """The ``port=`` of libpq key=value pairs as a number, or ``ConfigError`` saying what to
    write (the port is not secret, so it is shown)."""
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        shown = text if len(text) <= 20 else f"{text[:17]}..."
        raise ConfigError(
            f"database.conn_string has port={shown!r}, which is not a port number from 1 to "
            "65535; write it as port=5432"
        )
    return int(text)
