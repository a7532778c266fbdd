"""Per-test set-up + tear-down cost of each way of giving a test a clean database.

    python benchmarks/isolation.py [POSTGRES_URL] [--iterations N]

Every method runs the same small test body (1 workflow + 5 tasks written through a Store, then
read back) so that cleaning has rows to remove. The testkit's method is timed through its own
code (``TestDatabase`` over the ``Backend`` that ``WorkerDatabases`` makes: one warm Store per
worker and backend, its rows deleted after each test; ``KitState``), so the figures describe the
plugin; the alternatives are what it could do instead (over a ``MemoryTemplate`` or
``FileTemplate`` of their own). Methods of one backend run interleaved, one "test" each in turn,
so that drift of a noisy machine hits them all.
PostgreSQL comes from the URL, else COMPOZY_TEST_POSTGRES_URL, else ``acquire(None)``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from compozy.config import DatabaseConfig
from compozy.core import Component, Status
from compozy.store import Store, open_sqlite_connection, open_store, sql_connection
from compozy.store.tables import TABLES
from compozy.task import TaskState
from compozy.workflow import WorkflowState
from compozy_testkit.databases import Backend, TestDatabase, WorkerDatabases
from compozy_testkit.provision.postgres import PostgresServer
from compozy_testkit.provision.sqlite import FileTemplate, MemoryTemplate, file_config
from compozy_testkit.session import KitState, PostgresRun

INPUT = {"prompt": "Summarise the report. " * 4, "params": {"temperature": 0.2, "top_p": 0.9}}
HEAD = ("method", "total med", "total p90", "set-up+tear-down med", "p90", "")


def body(store: Store) -> None:
    """The test: one workflow and five tasks through the store, then read back."""
    flow = WorkflowState(workflow_id="bench", status=Status.RUNNING, input=INPUT)
    exec_id = store.workflows.upsert_state(flow).workflow_exec_id
    for i in range(5):
        task = TaskState(
            task_id=f"step-{i}",
            workflow_id="bench",
            workflow_exec_id=exec_id,
            component=Component.TASK,
            status=Status.RUNNING,
            input=INPUT,
        )
        store.tasks.upsert_state(task)
    assert len(store.workflows.get_state(exec_id).tasks) == 5


@dataclass
class Method:
    """One isolation method: ``run`` is one whole test (set-up, body, tear-down)."""

    name: str
    run: Callable[[], None]
    plugin: bool = False
    samples: list[int] = field(default_factory=list)
    phases: dict[str, list[int]] = field(default_factory=dict)


def plugin_method(name: str, backend: Backend, tmp_path: Path) -> Method:
    """The plugin's per-test path (``compozy_database`` + ``compozy_store``), timed by phase.

    ``tmp_path`` stands for pytest's: a migrated ``TestDatabase`` does not use it.
    """
    phases: dict[str, list[int]] = {"set-up": [], "body": [], "tear-down": []}

    def run() -> None:
        start = time.perf_counter_ns()
        database = TestDatabase(backend, tmp_path)
        store = database.store()
        opened = time.perf_counter_ns()
        body(store)
        done = time.perf_counter_ns()
        database.close()
        phases["set-up"].append(opened - start)
        phases["body"].append(done - opened)
        phases["tear-down"].append(time.perf_counter_ns() - done)

    return Method(name, run, plugin=True, phases=phases)


def measure(methods: list[Method], iterations: int) -> None:
    """Warm up, then run each method once per round, rotating which one goes first."""
    for method in methods:
        for _ in range(max(3, iterations // 20)):
            method.run()
        for samples in method.phases.values():
            samples.clear()
    gc.collect()
    for i in range(iterations):
        for method in methods[i % len(methods) :] + methods[: i % len(methods)]:
            start = time.perf_counter_ns()
            method.run()
            method.samples.append(time.perf_counter_ns() - start)


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def report(title: str, methods: list[Method]) -> None:
    """One table; the first method is the body alone, whose median the others subtract."""
    baseline = statistics.median(methods[0].samples)
    rows = [list(HEAD)]
    for m in methods:
        ordered = sorted(m.samples)
        med, p90 = statistics.median(ordered), ordered[math.ceil(0.9 * len(ordered)) - 1]
        over = ("-", "-") if m is methods[0] else (ms(med - baseline), ms(p90 - baseline))
        rows.append([m.name, ms(med), ms(p90), *over, "<- the plugin" if m.plugin else ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    print(f"\n{title} (ms, n={len(methods[0].samples)} per method)")
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:5], widths[1:5], strict=True)
        ]
        print("  " + " | ".join(cells) + (f"  {row[5]}" if row[5] else ""))
        if n == 0:
            print("  " + "-+-".join("-" * w for w in widths[:5]))
    for m in methods:
        if m.phases:
            split = ", ".join(f"{k} {ms(statistics.median(v))}" for k, v in m.phases.items())
            print(f"  the plugin by phase (medians): {split}; on a kept Store: body {ms(baseline)}")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sqlite_memory(workers: WorkerDatabases, root: Path, stack: ExitStack) -> list[Method]:
    template = MemoryTemplate()
    stack.callback(template.close)
    kept = stack.enter_context(template.store())

    def fresh_copy() -> None:
        with template.store() as store:
            body(store)

    def alembic() -> None:
        connection = sqlite3.connect(":memory:", check_same_thread=False)
        with open_sqlite_connection(connection, auto_migrate=True) as store:
            body(store)

    return [
        Method("body alone (one Store kept, no isolation)", lambda: body(kept)),
        plugin_method(
            "warm Store + DELETE of its rows (TestDatabase)", workers.backend("sqlite"), root
        ),
        Method("template backup() into a new Store per test", fresh_copy),
        Method("new :memory: Store + Alembic upgrade", alembic),
    ]


def sqlite_file(workers: WorkerDatabases, root: Path, stack: ExitStack) -> list[Method]:
    template = FileTemplate(root / "template.db")
    kept = stack.enter_context(open_store(file_config(root / "kept.db", auto_migrate=True)))
    counter = itertools.count()

    def tmp_path() -> Path:  # pytest's tmp_path: a new folder per test
        path = root / f"t{next(counter)}"
        path.mkdir()
        return path

    def fresh_copy() -> None:
        path = tmp_path() / "compozy.db"
        template.copy(path)
        with open_store(file_config(path)) as store:
            body(store)

    def alembic() -> None:
        with open_store(file_config(tmp_path() / "compozy.db", auto_migrate=True)) as store:
            body(store)

    return [
        Method("body alone (one Store kept, no isolation)", lambda: body(kept)),
        plugin_method(
            "warm Store + DELETE of its rows (TestDatabase)", workers.backend("sqlite-file"), root
        ),
        Method("copyfile(template) + new Store per test", fresh_copy),
        Method("new file + Alembic upgrade", alembic),
    ]


class Rollback(Exception):
    """Raised to leave ``Store.transaction()`` with a rollback."""


def postgres(
    server: PostgresServer, run: PostgresRun, workers: WorkerDatabases, root: Path, stack: ExitStack
) -> tuple[list[Method], list[float]]:
    """The methods, and how long each worker-database clone took."""
    clones: list[float] = []

    def config(url: str) -> DatabaseConfig:
        return DatabaseConfig(driver="postgres", conn_string=url, auto_migrate=False)

    def worker(suffix: str) -> str:  # a clone of the template, as PostgresBackend makes
        name = f"{run.prefix}_{suffix}"
        start = time.perf_counter()
        url = server.create_database(name, template=run.template)
        clones.append(time.perf_counter() - start)
        stack.callback(server.drop_database, name)
        return url

    start = time.perf_counter()
    plugin_backend = workers.backend("postgres")  # the plugin's own clone (dropped by close())
    clones.append(time.perf_counter() - start)
    body_url, delete_url, truncate_url, rollback_url = (worker(f"gw{n}") for n in range(4))
    kept = stack.enter_context(open_store(config(body_url)))
    kept_for_rollback = stack.enter_context(open_store(config(rollback_url)))
    counter = itertools.count()

    def new_store_then(url: str, wipe: str) -> None:
        # The wipe goes through the test's own Store, as the plugin's does: no extra connection.
        with open_store(config(url)) as store:
            body(store)
            with sql_connection(store, write=True) as conn:
                conn.exec_driver_sql(wipe)

    def clone() -> None:
        name = f"{run.prefix}_t{next(counter)}"
        with open_store(config(server.create_database(name, template=run.template))) as store:
            body(store)
        server.drop_database(name)

    def rollback() -> None:
        with contextlib.suppress(Rollback), kept_for_rollback.transaction():
            body(kept_for_rollback)
            raise Rollback

    # The tables the plugin's wipe empties, children first.
    delete = "; ".join(f"DELETE FROM {table.name}" for table in reversed(TABLES))
    truncate = "TRUNCATE " + ", ".join(table.name for table in reversed(TABLES))
    methods = [
        Method("body alone (one Store kept, no isolation)", lambda: body(kept)),
        plugin_method("warm Store + DELETE of its rows (TestDatabase)", plugin_backend, root),
        Method("new Store per test, close + DELETE", lambda: new_store_then(delete_url, delete)),
        Method(
            "new Store per test, close + TRUNCATE", lambda: new_store_then(truncate_url, truncate)
        ),
        Method("CREATE DATABASE .. TEMPLATE + new Store + DROP", clone),
        Method("outer transaction + ROLLBACK (Store kept) *", rollback),
    ]
    return methods, clones


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url", nargs="?", help="a PostgreSQL URL (needs CREATEDB)")
    parser.add_argument("--iterations", type=int, default=100, help="timed tests per method")
    args = parser.parse_args()
    started = time.perf_counter()
    one_off: list[tuple[str, float]] = []
    with ExitStack() as stack:
        url = args.postgres_url or os.environ.get("COMPOZY_TEST_POSTGRES_URL") or None
        state = KitState(backends=("postgres",), require_postgres=False, postgres_url=url)
        state.provision_postgres()  # the plugin's own start: acquire + migrated template
        stack.callback(state.shutdown)
        run, server = state.postgres, state.server
        pg_version = "unavailable"
        if run is not None and not run.error:
            with psycopg.connect(run.admin_url) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            pg_version = f"{row[0] if row else '?'} ({run.source})"
        print(
            f"CPUs: {os.cpu_count()}, load avg {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
            f"Python {sys.version.split()[0]}; SQLite {sqlite3.sqlite_version}; "
            f"PostgreSQL {pg_version}"
        )
        print(
            "One run on a noisy shared VM: compare ratios, not absolute figures. total = set-up + "
            "body + tear-down of one test; set-up+tear-down = total - median of the body alone. "
            "A new Store compiles its SQL on first use: that cold-Store cost lands in "
            "set-up+tear-down of every method that opens a Store per test; the plugin keeps one "
            "warm Store per worker and backend."
        )

        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cpzy-iso-")))
        (root / "worker").mkdir()
        workers = WorkerDatabases(root / "worker", state)  # as _compozy_worker_databases does
        stack.callback(workers.close)
        # The plugin's backends, made when a test first needs them: the template and its first
        # copy, through the plugin's own code.
        memory_template = timed(lambda: workers.backend("sqlite").warm_store())
        file_template = timed(lambda: workers.backend("sqlite-file").config())
        one_off.append(("SQLite: migrate the :memory: template (+ 1st clone)", memory_template))
        one_off.append(("SQLite: migrate the template file (+ 1st copy)", file_template))

        memory = sqlite_memory(workers, root, stack)
        measure(memory, args.iterations)
        report("SQLite in memory", memory)
        files = sqlite_file(workers, root, stack)
        measure(files, args.iterations)
        report("SQLite file (WAL)", files)

        if run is None or run.error:
            print(f"\nPostgreSQL: skipped ({run.error if run else 'not provisioned'})")
        else:
            assert server is not None
            pg, clones = postgres(server, run, workers, root, stack)
            measure(pg, args.iterations)
            report("PostgreSQL", pg)
            print(
                "  * cannot isolate tests that commit, use threads or several connections/Stores "
                "(their work escapes the outer transaction), so the plugin does not use it."
            )
            one_off += [
                ("PostgreSQL: server start (acquire)", server.startup_seconds),
                (
                    "PostgreSQL: template CREATE DATABASE + migration",
                    run.seconds - server.startup_seconds,
                ),
                (
                    f"PostgreSQL: per-worker clone (median of {len(clones)})",
                    statistics.median(clones),
                ),
            ]
        print("\nOne-off costs (ms, one sample each unless said)")
        for name, seconds in one_off:
            print(f"  {name}: {seconds * 1000:.1f}")
    print(f"\nWall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
