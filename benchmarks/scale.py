"""How the cost of compozy's hot reads grows with the rows they touch or the rows around them.

    python benchmarks/scale.py [POSTGRES_URL] [--repeat N] [--factor F] [--only sqlite|postgres]
                               [--profile]

Each operation runs at its size (the issue's, scaled by ``--factor``) and at a tenth of it, on a
SQLite file (WAL) and on PostgreSQL (the URL, else COMPOZY_TEST_POSTGRES_URL, else a throwaway
local cluster). Every size gets its own database, seeded by bulk INSERTs through
``sql_connection`` (seeding is not timed) and then ANALYZEd, and is read through the public
repository calls: the median of ``--repeat`` calls after one warm-up call is shown.

``growth`` is log(big / small time) / log(10): 1.0 means the cost grows with the size (linear),
0 that it stays the same (constant). The rows each call returns grow tenfold for the first four
operations, so linear is what they should show; the executions list returns one page whatever
the table holds, so it should be constant.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from compozy.config import DatabaseConfig
from compozy.core import DEFAULT_PAGE_SIZE, Status
from compozy.store import Store, open_store, sql_connection
from compozy.store.repos.paging import encode_cursor
from compozy.store.tables import task_states, workflow_states
from compozy.workflow import WorkflowFilter
from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

SIZES = {
    "tasks": 10_000,  # tasks of the execution that workflows.get_state reads
    "children": 10_000,  # children of the task that tasks.list_children reads
    "depth": 1_000,  # length of the parent chain that tasks.get_task_tree walks
    "executions": 1_000_000,  # workflow_states rows under the executions list
    "ids": 100_000,  # task ids given to tasks.list_by_ids
}
SMALL = 10  # the second measurement is at size // SMALL
FLOW = "flow-07"  # the workflow_id filter (1 in 100 executions)
BATCH = 5_000  # rows per executemany while seeding
BASE = datetime(2026, 1, 1, tzinfo=UTC)
INPUT = {"prompt": "Summarise the report for the board.", "item": 0, "tags": ["a", "b"]}
HEAD = ("backend", "operation", "small", "median ms", "big", "median ms", "big/small", "growth")


@dataclass(frozen=True)
class Seeded:
    """What one database holds: the ids and sizes the timed calls use."""

    size: dict[str, int]
    wide: str  # execution with size["tasks"] tasks
    parent: str  # task with size["children"] children
    root: str  # top of a parent chain size["depth"] long
    ids: list[str]  # size["ids"] task ids, shuffled
    cursors: dict[str, str | None]  # filter name -> the cursor of the middle of its listing


def _ts(n: int, step: timedelta) -> datetime:
    return BASE + n * step


def _workflow_row(exec_id: str, workflow_id: str, at: datetime) -> dict[str, Any]:
    return {
        "workflow_exec_id": exec_id,
        "workflow_id": workflow_id,
        "status": "SUCCESS",
        "usage": None,
        "input": {"n": 1},
        "output": None,
        "error": None,
        "created_at": at,
        "updated_at": at,
    }


def _task_row(
    exec_id: str, task_id: str, wf_exec: str, parent: str | None, at: datetime
) -> dict[str, Any]:
    return {
        "task_exec_id": exec_id,
        "task_id": task_id,
        "workflow_id": "bench",
        "workflow_exec_id": wf_exec,
        "parent_state_id": parent,
        "component": "task",
        "status": "SUCCESS",
        "execution_type": "basic",
        "agent_id": None,
        "action_id": None,
        "tool_id": None,
        "usage": None,
        "input": INPUT,
        "output": {"ok": True},
        "error": None,
        "created_at": at,
        "updated_at": at,
    }


def _insert(store: Store, table: sa.Table, rows: Iterator[dict[str, Any]]) -> None:
    """``rows`` in executemany batches of BATCH, one transaction per batch."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            with sql_connection(store, write=True) as conn:
                conn.execute(sa.insert(table), batch)
            batch = []
    if batch:
        with sql_connection(store, write=True) as conn:
            conn.execute(sa.insert(table), batch)


# The executions are made by the database itself, one INSERT .. SELECT over a series (1,000,000
# rows through executemany would take minutes). Row n: workflow flow-{n % 100}; FAILED when
# (n / 100) % 20 == 0 (5%, independent of the workflow), RUNNING for a fixed RUNNING_ROWS rows
# spread over the table (running executions do not grow with the history), else SUCCESS;
# created_at is BASE + n ms, so the newest rows come last.
RUNNING_ROWS = 200
_EXECUTIONS = {
    "sqlite": """
        WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < :count)
        INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, input, created_at,
                                     updated_at)
        SELECT printf('ex-%08d', n), printf('flow-%02d', n % 100), {status},
               json_object('n', 1), ts, ts
        FROM (SELECT n, strftime('%Y-%m-%dT%H:%M:%S', '2026-01-01', (n / 1000) || ' seconds')
                        || printf('.%06dZ', (n % 1000) * 1000) AS ts FROM series)
    """,
    "postgres": """
        INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, input, created_at,
                                     updated_at)
        SELECT 'ex-' || lpad(n::text, 8, '0'), 'flow-' || lpad((n % 100)::text, 2, '0'), {status},
               jsonb_build_object('n', 1), ts, ts
        FROM (SELECT n, timestamptz '2026-01-01 00:00:00+00' + n * interval '1 millisecond' AS ts
              FROM generate_series(1, :count) AS n) AS series
    """,
}
_STATUS = (
    "CASE WHEN n % :running_every = 0 THEN 'RUNNING' "
    "WHEN (n / 100) % 20 = 0 THEN 'FAILED' ELSE 'SUCCESS' END"
)
FILTERS = {  # name: (label, status, workflow_id)
    "all": ("", None, None),
    "running": (", status=RUNNING", Status.RUNNING, None),
    "workflow": (f", workflow_id={FLOW}", None, FLOW),
    "both": (f", FAILED+{FLOW}", Status.FAILED, FLOW),
}


def _middle_cursor(store: Store, status: Status | None, flow: str | None) -> str | None:
    """The cursor after the middle row of a filtered newest-first listing: a deep page."""
    wf = workflow_states.c
    found = sa.select(sa.func.count()).select_from(workflow_states)
    rows = sa.select(wf.created_at, wf.workflow_exec_id)
    for column, value in (("status", status), ("workflow_id", flow)):
        if value is not None:
            found = found.where(wf[column] == value)
            rows = rows.where(wf[column] == value)
    with sql_connection(store) as conn:
        count = int(conn.scalar(found) or 0)
        if count == 0:  # a tiny run (--factor): nothing matches
            return None
        order = (wf.created_at.desc(), wf.workflow_exec_id.desc())
        at, key = conn.execute(rows.order_by(*order).offset(count // 2).limit(1)).one()
    return encode_cursor(at, key)


def seed(store: Store, size: dict[str, int], rng: random.Random) -> Seeded:
    """The executions (with their created_at spread over the table) and the four task groups."""
    us = timedelta(microseconds=1)
    step = 0  # every task row gets a later created_at than the one before

    def tasks(wf: str, count: int, prefix: str, parent: Callable[[int], str | None]) -> list[str]:
        nonlocal step
        ids = [f"{prefix}-{n:07d}" for n in range(count)]
        rows = (
            _task_row(ids[n], f"{prefix}-{n}", wf, parent(n), _ts(step + n, us))
            for n in range(count)
        )
        _insert(store, task_states, rows)
        step += count
        return ids

    groups = ("wide", "fan", "chain", "ids")
    _insert(store, workflow_states, (_workflow_row(g, "bench", BASE) for g in groups))
    sql = _EXECUTIONS[store.driver].format(status=_STATUS)
    every = max(1, size["executions"] // RUNNING_ROWS)
    with sql_connection(store, write=True) as conn:
        conn.execute(sa.text(sql), {"count": size["executions"], "running_every": every})
    tasks("wide", size["tasks"], "wide", lambda n: None)
    fan_parent = tasks("fan", 1, "fan-parent", lambda n: None)[0]
    tasks("fan", size["children"], "fan", lambda n: fan_parent)
    chain = tasks(
        "chain", size["depth"], "chain", lambda n: None if n == 0 else f"chain-{n - 1:07d}"
    )
    ids = tasks("ids", size["ids"], "ids", lambda n: None)
    rng.shuffle(ids)
    with sql_connection(store, write=True) as conn:
        conn.execute(sa.text("ANALYZE"))
    cursors = {name: _middle_cursor(store, st, flow) for name, (_, st, flow) in FILTERS.items()}
    return Seeded(size, "wide", fan_parent, chain[0], ids, cursors)


def operations(store: Store, s: Seeded) -> list[tuple[str, str, Callable[[], object]]]:
    """(operation, size key, call)."""
    wf, tasks = store.workflows, store.tasks
    ops: list[tuple[str, str, Callable[[], object]]] = [
        ("workflows.get_state (N tasks)", "tasks", lambda: wf.get_state(s.wide)),
        ("tasks.list_children (N children)", "children", lambda: tasks.list_children(s.parent)),
        (
            "tasks.get_task_tree (chain N deep)",
            "depth",
            lambda: tasks.get_task_tree(s.root, max_depth=s.size["depth"]),
        ),
        ("tasks.list_by_ids (N ids)", "ids", lambda: tasks.list_by_ids(s.ids)),
    ]
    for name, (label, status, flow) in FILTERS.items():
        wanted = WorkflowFilter(status=status, workflow_id=flow)
        ops.append((f"executions list page 1{label}", "executions", partial(wf.list_page, wanted)))
        deep = partial(wf.list_page, wanted, cursor=s.cursors[name])
        ops.append((f"executions list deep page{label}", "executions", deep))
    return ops


def check(name: str, result: object, s: Seeded, key: str) -> None:
    """The call returned what was seeded (a benchmark of a wrong answer measures nothing)."""
    if key == "executions":
        items = result.items  # type: ignore[attr-defined]
        assert len(items) <= DEFAULT_PAGE_SIZE, (name, len(items))
        return
    if key == "tasks":
        assert len(result.tasks) == s.size["tasks"], name  # type: ignore[attr-defined]
        return
    assert len(result) == s.size[key], (name, len(result))  # type: ignore[arg-type]


def median_ms(call: Callable[[], object], repeat: int) -> float:
    gc.collect()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def profile(call: Callable[[], object], top: int = 14) -> str:
    prof = cProfile.Profile()
    prof.enable()
    call()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return "\n".join(lines[: top + 8])


@dataclass
class Result:
    backend: str
    operation: str
    small: int
    small_ms: float
    big: int
    big_ms: float

    @property
    def growth(self) -> float:
        return math.log(self.big_ms / self.small_ms) / math.log(self.big / self.small)


def run_backend(
    backend: str, open_db: Callable[[str], Store], sizes: dict[str, int], repeat: int, prof: bool
) -> tuple[list[Result], list[str]]:
    timings: dict[str, dict[int, tuple[int, float]]] = {}
    profiles: list[str] = []
    for which, factor in (("small", SMALL), ("big", 1)):
        size = {k: max(1, v // factor) for k, v in sizes.items()}
        store = open_db(which)
        started = time.perf_counter()
        seeded = seed(store, size, random.Random(42))
        print(
            f"  {backend} {which}: seeded in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )
        for op, key, call in operations(store, seeded):
            check(op, call(), seeded, key)  # warm-up, and the answer is right
            timings.setdefault(op, {})[factor] = (size[key], median_ms(call, repeat))
            if prof and which == "big":
                profiles.append(f"--- {backend}: {op} (N={size[key]:,})\n{profile(call)}")
        store.close()
    results = [
        Result(backend, op, t[SMALL][0], t[SMALL][1], t[1][0], t[1][1]) for op, t in timings.items()
    ]
    return results, profiles


def fmt_table(results: list[Result]) -> str:
    cells = [list(HEAD)]
    for r in results:
        cells.append(
            [
                r.backend,
                r.operation,
                f"{r.small:,}",
                f"{r.small_ms:.2f}",
                f"{r.big:,}",
                f"{r.big_ms:.2f}",
                f"{r.big_ms / r.small_ms:.1f}x",
                f"{r.growth:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEAD))]
    lines = []
    for n, row in enumerate(cells):
        left = [c.ljust(w) for c, w in zip(row[:2], widths, strict=False)]
        lines.append(
            " | ".join(left + [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)])
        )
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url", nargs="?", help="a PostgreSQL URL (needs CREATEDB)")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per operation (median)")
    parser.add_argument(
        "--factor", type=float, default=1.0, help="scale every size (0.1: a quick run)"
    )
    parser.add_argument("--only", choices=("sqlite", "postgres"), help="one backend only")
    parser.add_argument("--profile", action="store_true", help="cProfile each op at the big size")
    for key, value in SIZES.items():
        parser.add_argument(f"--{key}", type=int, default=None, help=f"default {value:,}")
    args = parser.parse_args()
    sizes = {
        k: getattr(args, k) if getattr(args, k) is not None else max(SMALL, int(v * args.factor))
        for k, v in SIZES.items()
    }
    started = time.perf_counter()
    results: list[Result] = []
    profiles: list[str] = []
    notes: list[str] = []
    with ExitStack() as stack:
        pg_version = "n/a"
        if args.only != "postgres":
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compozy-scale-")))

            def sqlite_db(which: str) -> Store:
                return open_store(DatabaseConfig(driver="sqlite", path=str(tmp / f"{which}.db")))

            r, p = run_backend("sqlite file", sqlite_db, sizes, args.repeat, args.profile)
            results += r
            profiles += p
        if args.only != "sqlite":
            url = args.postgres_url or os.environ.get("COMPOZY_TEST_POSTGRES_URL") or None
            try:
                server = acquire(url)
                stack.callback(server.stop)  # a no-op unless acquire started it

                def pg_db(which: str) -> Store:
                    name = f"{unique_prefix()}_scale_{which}"
                    db_url = server.create_database(name)
                    if url:  # somebody else's server: drop the scratch database at the end
                        stack.callback(server.drop_database, name)
                    return open_store(DatabaseConfig(conn_string=db_url))

                with psycopg.connect(server.admin_url) as conn:
                    row = conn.execute("SHOW server_version").fetchone()
                    pg_version = str(row[0]) if row else "?"
                    row = conn.execute("SHOW fsync").fetchone()
                    notes.append(
                        f"PostgreSQL {pg_version} from {'the given URL' if url else server.source}"
                        f", fsync={row[0] if row else '?'}."
                    )
                r, p = run_backend("postgres", pg_db, sizes, args.repeat, args.profile)
                results += r
                profiles += p
            except (PostgresUnavailable, psycopg.Error) as exc:
                notes.append(f"PostgreSQL SKIPPED: {exc}")
    print(
        f"compozy scale benchmark on {os.cpu_count()} CPUs ({platform.machine()}), Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg_version}; "
        f"median of {args.repeat} calls after a warm-up. ONE run on a shared machine: compare "
        "ratios, not absolute times."
    )
    print(fmt_table(results))
    print(
        "growth: log(big/small time)/log(size ratio): ~1 linear, ~0 constant, >1.2 worse than "
        "linear."
    )
    print(
        f"executions: 100 workflow ids; 5% FAILED, {RUNNING_ROWS} RUNNING whatever the size, the "
        f"rest SUCCESS; a page of {DEFAULT_PAGE_SIZE}; a deep page starts at the middle of its "
        "listing."
    )
    for note in notes:
        print(f"note: {note}")
    for block in profiles:
        print(block)
    print(f"wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
