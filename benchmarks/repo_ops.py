"""Latency of compozy repository calls beside the raw driver doing the same work.

    python benchmarks/repo_ops.py [POSTGRES_URL] [--iterations N]

Backends: SQLite in memory, SQLite file (WAL) and PostgreSQL (the URL, else
COMPOZY_TEST_POSTGRES_URL, else a throwaway local cluster). Each backend gets two databases,
migrated and seeded identically through compozy: one is then used through the compozy
repositories, the other through the raw driver (stdlib ``sqlite3`` / ``psycopg``) running the
same SQL without validation or dataclass mapping. The ratio compozy/raw is what the repository
layer costs per call.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from compozy.config import DatabaseConfig
from compozy.core import Component, Status, new_id
from compozy.store import Store, open_sqlite_connection, open_store
from compozy.task import TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowState
from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

PAYLOAD: dict[str, Any] = {  # ~1 KB of JSON: the `input` of every task
    "prompt": "Summarise the quarterly report for the board. " * 8,
    "params": {"temperature": 0.2, "max_tokens": 1024, "top_p": 0.95, "stream": False},
    "documents": [{"id": f"doc-{i}", "score": i / 10, "tags": ["finance", "q3"]} for i in range(8)],
}
WF_COLS = (
    "workflow_exec_id, workflow_id, status, usage, input, output, error, created_at, updated_at"
)
TASK_COLS = (
    "task_exec_id, task_id, workflow_id, workflow_exec_id, parent_state_id, component, status, "
    "execution_type, agent_id, action_id, tool_id, usage, input, output, error, created_at, "
    "updated_at"
)
WF_JSON, TASK_JSON = (3, 4, 5, 6), (11, 12, 13, 14)  # positions of the JSON columns above
_COLS = TASK_COLS.split(", ")
UPSERT_TASK = (
    f"INSERT INTO task_states ({TASK_COLS}) VALUES ({', '.join(['%s'] * len(_COLS))}) "
    "ON CONFLICT (task_exec_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLS[1:15])
    + ", updated_at = CASE WHEN task_states.updated_at > excluded.updated_at "
    f"THEN task_states.updated_at ELSE excluded.updated_at END RETURNING {TASK_COLS}"
)
GET_TASK = f"SELECT {TASK_COLS} FROM task_states WHERE task_exec_id = %s"
GET_WF = f"SELECT {WF_COLS} FROM workflow_states WHERE workflow_exec_id = %s"
TASKS_OF = f"SELECT {TASK_COLS} FROM task_states WHERE %s = %%s ORDER BY created_at, task_exec_id"
LOCK_USAGE = "SELECT usage FROM workflow_states WHERE workflow_exec_id = %s"
SET_USAGE = (
    "UPDATE workflow_states SET usage = %s, updated_at = CASE WHEN updated_at > %s "
    "THEN updated_at ELSE %s END WHERE workflow_exec_id = %s"
)
COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens")
OPTIONAL = ("reasoning_tokens", "cached_prompt_tokens", "input_audio_tokens", "output_audio_tokens")
HEAD = "backend|operation|compozy median µs|compozy p99 µs|raw median µs|raw p99 µs|ratio"
NOTES = [
    "upsert = a NEW task row on every call (fresh task_exec_id) through INSERT .. ON CONFLICT "
    "DO UPDATE .. RETURNING all columns; the raw side runs the same statement.",
    "raw side: its own database (in-memory db / file / PostgreSQL database) with the same "
    "schema and seed rows, made by compozy; raw reads run in autocommit, raw writes in "
    "BEGIN IMMEDIATE .. COMMIT (sqlite) or one transaction (psycopg; merge uses FOR UPDATE).",
    "compozy side: every call checks a connection out of its pool and runs in an explicit "
    "transaction (PostgreSQL: pool pre-ping + BEGIN + COMMIT = 3 extra round trips per read).",
]
Row = tuple[Any, ...]
Call = Callable[[], object]


@dataclass(frozen=True)
class Seeded:
    workflow_id: str
    wf20: str  # workflow with 20 tasks and 3 usage entries (get_state, merge_usage)
    task: str  # one of its tasks (tasks.get_state)
    parent: str  # task with 50 children (list_children)
    wf_upserts: str  # workflow that receives the upserted task rows


def new_task(exec_id: str, task_id: str = "upsert", parent: str | None = None) -> TaskState:
    return TaskState(
        task_id=task_id,
        workflow_id="bench",
        workflow_exec_id=exec_id,
        parent_state_id=parent,
        component=Component.TASK,
        status=Status.RUNNING,
        input=PAYLOAD,
    )


def usage_entry(provider: str, model: str, source: str, agent: str) -> UsageEntry:
    now = datetime.now(UTC)
    return UsageEntry(
        provider=provider,
        model=model,
        source=source,
        prompt_tokens=100,
        completion_tokens=20,
        agent_ids=[agent],
        captured_at=now,
        updated_at=now,
    )


def seed(store: Store) -> Seeded:
    """The same rows on every database (only the ids differ), written through compozy."""
    keys = [("openai", "gpt-4o", "task"), ("openai", "o3", "task"), ("anthropic", "x", "workflow")]
    usage = UsageSummary(entries=[usage_entry(p, m, s, "agent-0") for p, m, s in keys])
    flow = WorkflowState(workflow_id="bench", status=Status.RUNNING, input=PAYLOAD, usage=usage)
    wf20 = store.workflows.upsert_state(flow).workflow_exec_id
    tasks = [store.tasks.upsert_state(new_task(wf20, f"step-{i}")) for i in range(20)]
    wf2 = WorkflowState(workflow_id="bench", status=Status.RUNNING)
    other = store.workflows.upsert_state(wf2).workflow_exec_id
    parent = store.tasks.upsert_state(new_task(other, "fan-out")).task_exec_id
    for i in range(50):
        store.tasks.upsert_state(new_task(other, f"item-{i}", parent))
    return Seeded("bench", wf20, tasks[7].task_exec_id, parent, other)


def merge_usage_json(stored: list[dict[str, Any]] | None, add: dict[str, Any]) -> list[Any]:
    """compozy's UsageSummary merge on plain dicts (no validation, no dataclasses)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in [*(stored or []), add]:
        key = (e["provider"].casefold(), e["model"].casefold(), e["source"].casefold())
        old = merged.get(key)
        if old is None:
            merged[key] = dict(e)
            continue
        for n in COUNTERS:
            old[n] += e[n]
        for n in OPTIONAL:
            if old[n] is not None or e[n] is not None:
                old[n] = (old[n] or 0) + (e[n] or 0)
        old["agent_ids"] = sorted(set(old["agent_ids"]) | set(e["agent_ids"]))
        captured = [t for t in (old["captured_at"], e["captured_at"]) if t is not None]
        updated = [t for t in (old["updated_at"], e["updated_at"]) if t is not None]
        old["captured_at"] = min(captured) if captured else None
        old["updated_at"] = max(updated) if updated else None
    ordered = sorted(
        merged.items(), key=lambda kv: (kv[0], *(kv[1][k] for k in ("provider", "model", "source")))
    )
    return [entry for _, entry in ordered]


class Raw:
    """The five operations on a bare driver connection; subclasses adapt to the driver."""

    lock_suffix = ""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def q(self, sql: str) -> str:
        return sql

    def enc(self, value: Any) -> Any:
        return value

    def dec(self, row: Row, json_cols: tuple[int, ...]) -> Row:
        return row

    def now(self) -> Any:
        return datetime.now(UTC)

    def write(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def upsert_task(self, exec_id: str, seeded: Seeded) -> Row:
        now = self.now()
        ids = (exec_id, "upsert", seeded.workflow_id, seeded.wf_upserts, None)
        params = (*ids, "task", "RUNNING", "basic", None, None, None, None, self.enc(PAYLOAD))
        with self.write():
            row = self.conn.execute(self.q(UPSERT_TASK), (*params, None, None, now, now)).fetchone()
        return self.dec(row, TASK_JSON)

    def get_task(self, exec_id: str) -> Row:
        row = self.conn.execute(self.q(GET_TASK), (exec_id,)).fetchone()
        if row is None:
            raise LookupError(exec_id)
        return self.dec(row, TASK_JSON)

    def get_workflow(self, exec_id: str) -> tuple[Row, dict[str, Row]]:
        wf = self.conn.execute(self.q(GET_WF), (exec_id,)).fetchone()
        if wf is None:
            raise LookupError(exec_id)
        rows = self.conn.execute(self.q(TASKS_OF % "workflow_exec_id"), (exec_id,)).fetchall()
        return self.dec(wf, WF_JSON), {r[1]: self.dec(r, TASK_JSON) for r in rows}

    def list_children(self, parent: str) -> list[Row]:
        rows = self.conn.execute(self.q(TASKS_OF % "parent_state_id"), (parent,)).fetchall()
        return [self.dec(r, TASK_JSON) for r in rows]

    def merge_usage(self, exec_id: str, entry: dict[str, Any]) -> list[Any]:
        with self.write():
            row = self.conn.execute(self.q(LOCK_USAGE + self.lock_suffix), (exec_id,)).fetchone()
            if row is None:
                raise LookupError(exec_id)
            merged = merge_usage_json(self.dec(row, (0,))[0], entry)
            now = self.now()
            self.conn.execute(self.q(SET_USAGE), (self.enc(merged), now, now, exec_id))
        return merged


class RawSQLite(Raw):
    def __init__(self, path: str, conn: sqlite3.Connection | None = None) -> None:
        """The store's pragmas: autocommit driver, foreign keys, and WAL + NORMAL for files."""
        conn = conn or sqlite3.connect(path, check_same_thread=False)
        conn.isolation_level = None
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        super().__init__(conn)

    def q(self, sql: str) -> str:
        return sql.replace("%s", "?")

    def enc(self, value: Any) -> Any:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def dec(self, row: Row, json_cols: tuple[int, ...]) -> Row:
        out = list(row)
        for i in json_cols:
            if out[i] is not None:
                out[i] = json.loads(out[i])
        return tuple(out)

    def now(self) -> Any:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # the store's text format

    @contextmanager
    def write(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


class RawPostgres(Raw):
    lock_suffix = " FOR UPDATE"

    def enc(self, value: Any) -> Any:
        return Jsonb(value)

    @contextmanager
    def write(self) -> Iterator[None]:
        with self.conn.transaction():
            yield


def operations(
    store: Store, raw: Raw, raw_store: Store, calls: int
) -> list[tuple[str, Call, Call]]:
    """(name, compozy call, raw call); each side works on its own seeded database."""
    cs, rs = seed(store), seed(raw_store)
    # Rows to upsert are built untimed and consumed by the timed calls.
    states = iter([new_task(cs.wf_upserts) for _ in range(calls)])
    ids = iter([new_id() for _ in range(calls)])
    entry = usage_entry("openai", "gpt-4o", "task", "agent-1")
    summary, raw_entry = UsageSummary(entries=[entry]), entry.to_json()
    c, r = store.tasks, raw  # short names keep each operation on few lines
    return [
        (
            "tasks.upsert_state (new row, 1 KB input)",
            lambda: c.upsert_state(next(states)),
            lambda: r.upsert_task(next(ids), rs),
        ),
        ("tasks.get_state", lambda: c.get_state(cs.task), lambda: r.get_task(rs.task)),
        (
            "workflows.get_state (20 tasks)",
            lambda: store.workflows.get_state(cs.wf20),
            lambda: r.get_workflow(rs.wf20),
        ),
        (
            "tasks.list_children (50 children)",
            lambda: c.list_children(cs.parent),
            lambda: r.list_children(rs.parent),
        ),
        (
            "workflows.merge_usage (1 entry into 3)",
            lambda: store.workflows.merge_usage(cs.wf20, summary),
            lambda: r.merge_usage(rs.wf20, raw_entry),
        ),
    ]


def measure(compozy: Call, raw: Call, warmup: int, iterations: int) -> tuple[list[int], ...]:
    """Warm up, then time compozy and raw back to back, alternating which one goes first."""
    for _ in range(warmup):
        compozy()
        raw()
    gc.collect()
    c_ns: list[int] = []
    r_ns: list[int] = []
    for i in range(iterations):
        order = ((compozy, c_ns), (raw, r_ns)) if i % 2 == 0 else ((raw, r_ns), (compozy, c_ns))
        for fn, out in order:
            start = time.perf_counter_ns()
            fn()
            out.append(time.perf_counter_ns() - start)
    return c_ns, r_ns


def median_p99_us(ns: list[int]) -> tuple[float, float]:
    ordered = sorted(ns)
    return statistics.median(ordered) / 1000, ordered[math.ceil(0.99 * len(ordered)) - 1] / 1000


def run_backend(name: str, store: Store, raw: Raw, raw_store: Store, iterations: int) -> list[Row]:
    print(f"  {name}: seeding and timing ...", file=sys.stderr, flush=True)
    warmup = max(50, iterations // 10)
    rows = []
    for op, compozy_call, raw_call in operations(store, raw, raw_store, warmup + iterations):
        c_ns, r_ns = measure(compozy_call, raw_call, warmup, iterations)
        (cm, cp), (rm, rp) = median_p99_us(c_ns), median_p99_us(r_ns)
        rows.append((name, op, cm, cp, rm, rp, cm / rm))
    return rows


def start_postgres(stack: ExitStack, arg: str | None) -> tuple[str, str, str, str]:
    """(compozy db URL, raw db URL, server version, where); raises PostgresUnavailable."""
    env = os.environ.get("COMPOZY_TEST_POSTGRES_URL")
    url = arg or env or None
    try:
        server = acquire(url)
        stack.callback(server.stop)  # a no-op unless acquire started the server
        names = [f"{unique_prefix()}_{side}" for side in ("compozy", "raw")]
        urls = [server.create_database(name) for name in names]
        if url:  # somebody else's server: drop the scratch databases at the end
            for name in names:
                stack.callback(server.drop_database, name)
        with psycopg.connect(urls[0]) as conn:
            version = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        raise PostgresUnavailable([f"{type(exc).__name__}: {exc}"]) from exc
    where = "command-line URL" if arg else "COMPOZY_TEST_POSTGRES_URL" if url else server.source
    if server.stop_callback is not None:  # started here: the testkit runs it without durability
        where += ", throwaway, fsync=off, synchronous_commit=off"
    return urls[0], urls[1], str(version[0] if version else "?"), where


def sqlite_stores(stack: ExitStack, directory: Path | None) -> tuple[Store, RawSQLite, Store]:
    """(compozy store, raw connection, store that migrates and seeds the raw database)."""
    if directory is None:  # in memory: the raw connection is the one the seeding store wraps
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        raw_store = open_sqlite_connection(conn, auto_migrate=True)
        raw = RawSQLite(":memory:", conn)
    else:
        raw_store = open_store(DatabaseConfig(driver="sqlite", path=str(directory / "raw.db")))
        raw = RawSQLite(str(directory / "raw.db"))
        stack.callback(raw.conn.close)
    stack.callback(raw_store.close)
    path = ":memory:" if directory is None else str(directory / "compozy.db")
    store = stack.enter_context(open_store(DatabaseConfig(driver="sqlite", path=path)))
    return store, raw, raw_store


def print_table(rows: list[Row]) -> None:
    cells = [HEAD.split("|")]
    cells += [[r[0], r[1], *(f"{v:.0f}" for v in r[2:6]), f"{r[6]:.2f}x"] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for n, row in enumerate(cells):
        left = [c.ljust(w) for c, w in zip(row[:2], widths, strict=False)]
        print(" | ".join(left + [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]))
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url", nargs="?", help="a PostgreSQL URL (needs CREATEDB)")
    parser.add_argument("--iterations", type=int, default=500, help="timed calls per op and side")
    args = parser.parse_args()
    started = time.perf_counter()
    results: list[Row] = []
    notes = list(NOTES)
    with ExitStack() as stack:
        try:
            pg: tuple[str, str, str, str] | None = start_postgres(stack, args.postgres_url)
        except PostgresUnavailable as exc:
            pg = None
            notes.insert(0, f"PostgreSQL SKIPPED: {exc}")
        print(
            f"compozy repository benchmark on {os.cpu_count()} CPUs ({platform.machine()}), "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"PostgreSQL {pg[2] if pg else 'n/a'}, psycopg {psycopg.__version__}"
        )
        print(
            f"{args.iterations} timed calls per operation and side after warm-up. Figures come "
            "from ONE run on a noisy shared machine: compare ratios, not absolute numbers."
        )
        store, raw, raw_store = sqlite_stores(stack, None)
        results += run_backend("sqlite :memory:", store, raw, raw_store, args.iterations)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compozy-bench-")))
        store, raw, raw_store = sqlite_stores(stack, tmp)
        results += run_backend("sqlite file WAL", store, raw, raw_store, args.iterations)
        if pg is not None:
            c_url, r_url, _, where = pg
            store = stack.enter_context(open_store(DatabaseConfig(conn_string=c_url)))
            raw_store = stack.enter_context(open_store(DatabaseConfig(conn_string=r_url)))
            raw_pg = RawPostgres(stack.enter_context(psycopg.connect(r_url, autocommit=True)))
            results += run_backend("postgres", store, raw_pg, raw_store, args.iterations)
            notes.append(f"PostgreSQL: {where}.")
    print_table(results)
    for note in notes:
        print(f"note: {note}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
