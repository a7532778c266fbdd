"""The pgvector provider: a table per collection on a PostgreSQL server with the ``vector``
extension.

The table ``(id text PRIMARY KEY, embedding vector(D), text, metadata jsonb)`` is made on first
open, with an HNSW index on the cosine distance (``vector_cosine_ops``; pgvector indexes at most
2,000 dimensions, so a wider table is searched exactly, without one) and a GIN index on the
metadata. A score is ``1 - (embedding <=> query)``, the cosine similarity; filters are jsonb
containment (``metadata @> '{"k": v}'``), so values compare with their JSON types: ``"1"`` is not
``1`` and ``true`` is not ``1``, while ``1`` is ``1.0``. Searches use HNSW's iterative scans
(pgvector 0.8), so that a filter does not leave fewer than ``top_k`` matches when more
exist.

Driver errors do not escape: an unreachable server is ``StoreUnavailable``, a refused value a
``ValidationError``, anything else a ``CompozyError`` naming the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.types.json import Jsonb

from compozy.errors import CompozyError, ConfigError, StoreUnavailable, ValidationError
from compozy.knowledge import Match, Metadata, MetadataValue, Record
from compozy.knowledge.providers import _common

if TYPE_CHECKING:
    from compozy.config import DatabaseConfig, VectorDBConfig

__all__ = ["HNSW_MAX_DIMENSION", "PgvectorStore", "open_store", "resolve_dsn"]

HNSW_MAX_DIMENSION = 2000
"""pgvector's limit for an HNSW index on a ``vector`` column."""
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes
_EF_SEARCH = 100
"""HNSW candidates per search (pgvector's default is 40): better recall for a little time."""
_INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get install postgresql-<major>-pgvector; elsewhere see "
    "https://github.com/pgvector/pgvector#installation) or point dsn at a server that has it"
)


def open_store(config: VectorDBConfig, *, database: DatabaseConfig | None = None) -> PgvectorStore:
    """The pgvector store of ``config``, on its ``dsn`` or else the database's own connection."""
    return PgvectorStore(
        resolve_dsn(config, database),
        config.collection,
        config.dimension,
        name=config.id,
        approximate=config.index == "hnsw",
    )


def resolve_dsn(config: VectorDBConfig, database: DatabaseConfig | None) -> str:
    """``config.dsn``, else the URL of ``database`` when it is PostgreSQL; as a libpq URL."""
    if config.dsn:
        scheme, sep, rest = config.dsn.partition("://")
        # postgresql+psycopg:// (SQLAlchemy's spelling) means the same server to libpq.
        return f"{scheme.split('+', 1)[0]}{sep}{rest}" if sep else config.dsn
    if database is not None and database.driver == "postgres":
        from compozy.store.drivers.postgres import build_url

        url = build_url(database).set(drivername="postgresql")
        return url.render_as_string(hide_password=False)
    raise ConfigError(
        f"knowledge.vector_dbs ({config.id}): the pgvector provider needs dsn (a postgresql:// "
        "URL), or database.driver postgres to use the database's own connection"
    )


def _no_nul(value: object, what: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError(f"{what} holds a NUL character, which PostgreSQL cannot store")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PgvectorStore:
    """A ``VectorStore`` on one table of a PostgreSQL server with pgvector."""

    def __init__(
        self,
        dsn: str,
        table: str,
        dimension: int,
        *,
        name: str | None = None,
        approximate: bool = False,
    ) -> None:
        if dimension <= 0:
            raise ValidationError(f"pgvector: dimension must be greater than 0, got {dimension}")
        if not table or len(table.encode()) > _MAX_IDENTIFIER or "\x00" in table:
            raise ValidationError(
                f"pgvector: the table name {table!r} must be 1 to {_MAX_IDENTIFIER} bytes"
            )
        self._dsn = dsn
        self._dimension = dimension
        self._approximate = approximate and dimension <= HNSW_MAX_DIMENSION
        self.table = table
        self._name = name or table
        self._table = sql.Identifier(table)
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.server = self._describe()
        except psycopg.Error:
            raise ConfigError(f"pgvector ({self._name}): dsn is not a valid URL") from None
        self._setup()

    @property
    def dimension(self) -> int:
        return self._dimension

    # -- connections -----------------------------------------------------------------------

    def _describe(self) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self._dsn)
        return (
            f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname', '')}"
        )

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        try:
            register_vector(conn)
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(_EF_SEARCH)))
            # Iterative scans (pgvector 0.8) go on past the rows a filter or min_score drops,
            # so an indexed search still finds top_k matches when that many exist.
            # (Before 0.8 there are none: a filtered search may find fewer on a large table.)
            with contextlib.suppress(psycopg.errors.UndefinedObject):
                conn.execute("SET hnsw.iterative_scan = strict_order")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, driver errors translated; a broken one is not put back."""
        if self._closed:
            raise CompozyError(f"pgvector ({self._name}): the store is closed")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            with self._errors():
                if conn is None:
                    conn = self._connect()
                yield conn
        finally:
            if conn is not None:
                if conn.closed or conn.broken or self._closed:
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"pgvector ({self._name}): cannot reach the server at {self.server}: "
                f"{_first_line(exc)}"
            ) from None
        except psycopg.Error as exc:
            if (exc.sqlstate or "").startswith("22"):  # data exception: a value was refused
                raise ValidationError(
                    f"pgvector ({self._name}): the server refused a value: {_first_line(exc)}"
                ) from None
            raise CompozyError(
                f"pgvector ({self._name}): table {self.table!r} on {self.server}: "
                f"{_first_line(exc)}"
            ) from None

    def _index_name(self, suffix: str) -> sql.Identifier:
        name = f"{self.table}_{suffix}"
        if len(name.encode()) > _MAX_IDENTIFIER:  # PostgreSQL would cut it, maybe into a clash
            digest = hashlib.sha256(self.table.encode()).hexdigest()[:8]
            name = f"{self.table.encode()[:40].decode(errors='ignore')}_{digest}_{suffix}"
        return sql.Identifier(name)

    def _setup(self) -> None:
        """The extension, the table and its indexes; check the dimension of a table made
        before."""
        with self._errors():
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        with conn, self._errors(), conn.transaction():
            # Two stores opening the same table at once would race on CREATE ... IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("compozy-pgvector",))
            installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            if installed.fetchone() is None:
                available = conn.execute(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
                ).fetchone()
                if available is None:
                    raise CompozyError(
                        f"pgvector ({self._name}): the server at {self.server} has no pgvector "
                        f"extension: {_INSTALL_HINT}"
                    )
                try:
                    with conn.transaction():
                        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg.errors.InsufficientPrivilege:
                    raise CompozyError(
                        f"pgvector ({self._name}): the server at {self.server} has pgvector but "
                        "this user may not create the extension: run CREATE EXTENSION vector "
                        "in that database as a superuser (or the database owner)"
                    ) from None
            found = conn.execute(
                "SELECT a.atttypmod FROM pg_attribute a "
                "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' "
                "AND NOT a.attisdropped",
                (sql.Identifier(self.table).as_string(conn),),
            ).fetchone()
            if found is not None:
                if found[0] != self._dimension:
                    raise ValidationError(
                        f"pgvector ({self._name}): table {self.table!r} holds vectors of "
                        f"dimension {found[0]}, but this vector DB's dimension is "
                        f"{self._dimension} (expected {self._dimension}, got {found[0]}); use "
                        "another collection, or drop the table"
                    )
            else:
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id text PRIMARY KEY, embedding "
                        "vector({}) NOT NULL, text text NOT NULL DEFAULT '', metadata jsonb NOT "
                        "NULL DEFAULT '{{}}')"
                    ).format(self._table, sql.Literal(self._dimension))
                )
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)"
                    ).format(self._index_name("metadata_gin"), self._table)
                )
            # index: exact (the default) searches every row, so the top_k are the true top_k;
            # index: hnsw trades that for speed on large tables. The index follows the setting.
            hnsw = self._index_name("embedding_hnsw")
            if self._approximate:
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding "
                        "vector_cosine_ops)"
                    ).format(hnsw, self._table)
                )
            else:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(hnsw))

    # -- checks ----------------------------------------------------------------------------

    @staticmethod
    def _storable(metadata: Mapping[str, MetadataValue] | None, what: str) -> None:
        for key, value in (metadata or {}).items():
            _no_nul(key, f"{what} key {key!r}")
            _no_nul(value, f"{what} {key!r}")

    def _rows(self, records: Sequence[Record]) -> list[tuple[str, Any, str, Jsonb]]:
        checked, vectors = _common.check_records(records, self._dimension)
        rows = []
        for record, vector in zip(checked, vectors, strict=True):
            what = f"record {record.id!r}"
            _no_nul(record.id, what)
            _no_nul(record.text, f"the text of {what}")
            self._storable(record.metadata, f"{what}: metadata")
            rows.append((record.id, vector, record.text, Jsonb(dict(record.metadata))))
        return rows

    # -- the protocol ----------------------------------------------------------------------

    def upsert(self, records: Sequence[Record]) -> None:
        rows = self._rows(records)
        if not rows:
            return
        statement = sql.SQL(
            "INSERT INTO {} (id, embedding, text, metadata) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, "
            "text = EXCLUDED.text, metadata = EXCLUDED.metadata"
        ).format(self._table)
        with self._connection() as conn, conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(statement, rows)

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        min_score: float | None = None,
        where: Metadata | None = None,
    ) -> list[Match]:
        query, top_k, min_score = _common.check_search(vector, self._dimension, top_k, min_score)
        conditions, params = self._filter(None, where)
        if min_score is not None:
            conditions.append(sql.SQL("1 - (embedding <=> %(query)s) >= %(min_score)s"))
            params["min_score"] = min_score
        params.update(query=query, top_k=top_k)
        # ORDER BY the distance itself, so that the HNSW index can give the order.
        statement = sql.SQL(
            "SELECT id, text, metadata, 1 - (embedding <=> %(query)s) FROM {} {} "
            "ORDER BY embedding <=> %(query)s, id LIMIT %(top_k)s"
        ).format(self._table, self._where_clause(conditions))
        with self._connection() as conn:
            rows = conn.execute(statement, params).fetchall()
        # Equal scores from distances one rounding error apart still go by id.
        return _common.ordered([Match(i, _common.clamp(s), t, m) for i, t, m, s in rows])

    def _filter(
        self, ids: Sequence[str] | None, where: Metadata | None
    ) -> tuple[list[sql.Composable], dict[str, Any]]:
        """WHERE conditions: ``id = ANY(ids)`` and jsonb containment of ``where``, which
        compares JSON types (``"1"`` is not ``1``, ``true`` is not ``1``, ``1`` is ``1.0``)."""
        conditions: list[sql.Composable] = []
        params: dict[str, Any] = {}
        if ids is not None:
            conditions.append(sql.SQL("id = ANY(%(ids)s)"))
            params["ids"] = list(ids)
        checked = _common.check_where(where)
        if checked is not None:
            self._storable(checked, "where")
            conditions.append(sql.SQL("metadata @> %(where)s"))
            params["where"] = Jsonb(checked)
        return conditions, params

    @staticmethod
    def _where_clause(conditions: list[sql.Composable]) -> sql.Composable:
        if not conditions:
            return sql.SQL("")
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions)

    def get(self, ids: Sequence[str]) -> list[Record]:
        wanted = _common.check_ids(ids)
        if not wanted:
            return []
        conditions, params = self._filter(wanted, None)
        statement = sql.SQL("SELECT id, embedding, text, metadata FROM {} {}").format(
            self._table, self._where_clause(conditions)
        )
        with self._connection() as conn:
            rows = conn.execute(statement, params).fetchall()
        found = {row[0]: Record(row[0], row[1].to_list(), row[2], row[3]) for row in rows}
        return [found[i] for i in wanted if i in found]

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        wanted, checked_where = _common.check_delete(ids, where)
        if wanted is not None and not wanted:
            return
        conditions, params = self._filter(wanted, checked_where)
        statement = sql.SQL("DELETE FROM {} {}").format(self._table, self._where_clause(conditions))
        with self._connection() as conn:
            conn.execute(statement, params)

    def count(self, where: Metadata | None = None) -> int:
        conditions, params = self._filter(None, where)
        statement = sql.SQL("SELECT count(*) FROM {} {}").format(
            self._table, self._where_clause(conditions)
        )
        with self._connection() as conn:
            row = conn.execute(statement, params).fetchone()
        return int(row[0]) if row is not None else 0

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def drop(self) -> None:
        """Drop the table (and its indexes); the store is closed."""
        with self._connection() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
        self.close()
