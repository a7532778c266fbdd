"""Engine throughput: task states stored per second for workflows of echo tasks.

    python benchmarks/engine.py [POSTGRES_URL] [--rounds N] [--large N] [--only TEXT]
                                [--profile CASE] [--on-task]

Each workflow runs through the public API, ``Engine(store, definitions).run(id, input)``, as
``compozy run`` does (the Engine's defaults: 8 parallel tasks per container), on a SQLite file
(WAL), SQLite in memory and PostgreSQL (the URL, else COMPOZY_TEST_POSTGRES_URL, else a
throwaway local cluster). tasks/s = task rows the run stored / wall time of ``run``; every run
is checked to end SUCCESS with every task row SUCCESS and the right output.

Cases: a collection of 1,000 and of 10,000 echo items, in parallel and in sequential mode; a
parallel of 50 echo tasks; a composite 50 deep (49 composites around one echo). The target
line is the issue's: >= 2,000 tasks/s on a SQLite file and >= 1,000 on PostgreSQL for the
1,000-item (parallel) collection. ``--profile CASE`` runs that case once more on the first
backend under cProfile and prints where the time goes (cumulative and own time). ``--on-task``
passes a no-op ``on_task`` callback, as ``compozy run``'s progress display does.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compozy.config import DatabaseConfig
from compozy.core import Status
from compozy.engine import Engine, WorkflowDefinition, load_definitions
from compozy.store import Store, open_store
from compozy.task import TaskFilter, TaskState
from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

TARGETS = {"sqlite file": 2000.0, "postgres": 1000.0}
TARGET_CASE = "collection 1000 parallel"


@dataclass(frozen=True)
class Case:
    name: str
    workflow_id: str
    input: dict[str, Any]
    tasks: int  # task rows one run stores
    large: bool = False  # run once per backend, not --rounds times


def _collection(workflow_id: str, mode: str) -> str:
    return f"""\
id: {workflow_id}
tasks:
  - id: each
    type: collection
    mode: {mode}
    items: "{{{{ input.items }}}}"
    task: {{id: one, tool: echo, with: {{value: "{{{{ item }}}}", index: "{{{{ index }}}}"}}}}
"""


def _parallel(width: int) -> str:
    children = "\n".join(
        f"      - {{id: p{i}, tool: echo, with: {{n: {i}}}}}" for i in range(width)
    )
    return f"id: wide\ntasks:\n  - id: all\n    type: parallel\n    tasks:\n{children}\n"


def _composite(depth: int) -> str:
    lines = ["id: deep", "tasks:"]
    indent = "  "
    for level in range(depth - 1):
        lines += [f"{indent}- id: c{level}", f"{indent}  type: composite", f"{indent}  tasks:"]
        indent += "    "
    lines.append(f"{indent}- {{id: leaf, tool: echo, with: {{depth: {depth}}}}}")
    return "\n".join(lines) + "\n"


def definitions(directory: Path) -> dict[str, WorkflowDefinition]:
    files = {
        "collection_parallel": _collection("collection_parallel", "parallel"),
        "collection_sequential": _collection("collection_sequential", "sequential"),
        "wide": _parallel(50),
        "deep": _composite(50),
    }
    paths = []
    for name, text in files.items():
        path = directory / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return load_definitions(paths)


def cases(large: int) -> list[Case]:
    found = []
    for size in (1000, large):
        for mode in ("parallel", "sequential"):
            items = {"items": list(range(size))}
            found.append(
                Case(
                    f"collection {size} {mode}", f"collection_{mode}", items, size + 1, size > 1000
                )
            )
    found.append(Case("parallel 50 wide", "wide", {}, 51))
    found.append(Case("composite 50 deep", "deep", {}, 50))
    return found


def check(store: Store, case: Case, exec_id: str, final_status: Status) -> None:
    """The end state every run must store, whatever the engine batches."""
    problems = []
    if final_status is not Status.SUCCESS:
        problems.append(f"workflow {final_status.value}")
    tasks = store.tasks.list_states(TaskFilter(workflow_exec_id=exec_id))
    if len(tasks) != case.tasks:
        problems.append(f"{len(tasks)} task rows, not {case.tasks}")
    unfinished = [t for t in tasks if t.status is not Status.SUCCESS or t.output is None]
    if unfinished:
        problems.append(f"{len(unfinished)} task rows not SUCCESS with an output")
    if case.workflow_id.startswith("collection"):
        output = store.workflows.get_state(exec_id).output or {}
        results = output.get("each", {}).get("results", [])
        if [r["value"] for r in results] != case.input["items"]:
            problems.append("the collection's results are not the items in order")
    if problems:
        raise SystemExit(f"{case.name}: wrong end state: {'; '.join(problems)}")


def run_once(engine: Engine, store: Store, case: Case, on_task: bool) -> float:
    callback: Callable[[TaskState], None] | None = (lambda _t: None) if on_task else None
    started = time.perf_counter()
    final = engine.run(case.workflow_id, case.input, on_task=callback)
    took = time.perf_counter() - started
    check(store, case, final.workflow_exec_id, final.status)
    return took


@contextmanager
def backends(stack: ExitStack, pg_url: str | None) -> Iterator[list[tuple[str, Store, str]]]:
    """(name, store, note) for every backend that is available."""
    found: list[tuple[str, Store, str]] = []
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compozy-engine-")))
    file_store = open_store(DatabaseConfig(driver="sqlite", path=str(tmp / "bench.db")))
    found.append(("sqlite file", stack.enter_context(file_store), "WAL, synchronous=NORMAL"))
    memory = open_store(DatabaseConfig(driver="sqlite", path=":memory:"))
    found.append(("sqlite :memory:", stack.enter_context(memory), ""))
    url = pg_url or os.environ.get("COMPOZY_TEST_POSTGRES_URL") or None
    try:
        server = acquire(url)
        stack.callback(server.stop)  # a no-op unless acquire started the server
        name = f"{unique_prefix()}_engine"
        db_url = server.create_database(name)
        if url:
            stack.callback(server.drop_database, name)
        where = "command-line URL" if pg_url else "COMPOZY_TEST_POSTGRES_URL" if url else ""
        if server.stop_callback is not None:
            where = f"{server.source}, throwaway, fsync=off, synchronous_commit=off"
        store = stack.enter_context(open_store(DatabaseConfig(conn_string=db_url)))
        found.append(("postgres", store, where))
    except PostgresUnavailable as exc:
        print(f"postgres skipped: {exc}", file=sys.stderr)
    yield found


def profile(engine: Engine, store: Store, case: Case, on_task: bool) -> None:
    """Run ``case`` once under cProfile, in every thread (the executor's pools and any writer
    thread), and print the merged statistics."""
    profilers: list[cProfile.Profile] = []

    def start_in_thread(*_: object) -> None:
        thread_profiler = cProfile.Profile()
        profilers.append(thread_profiler)
        thread_profiler.enable()

    main_profiler = cProfile.Profile()
    threading.setprofile(start_in_thread)
    main_profiler.enable()
    try:
        took = run_once(engine, store, case, on_task)
    finally:
        main_profiler.disable()
        threading.setprofile(None)
    print(f"\nprofile of {case.name} ({case.tasks / took:.0f} tasks/s under cProfile)")
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        stats = pstats.Stats(main_profiler, stream=out)
        for thread_profiler in profilers:
            stats.add(thread_profiler)
        stats.strip_dirs().sort_stats(order).print_stats(35)
        body = out.getvalue().split("ncalls", 1)[1]
        print(f"--- by {order} (one run of {case.tasks} tasks; every thread's calls) ---")
        print("   ncalls" + body.rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url", nargs="?", help="a PostgreSQL URL (needs CREATEDB)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per small case (median)")
    parser.add_argument("--large", type=int, default=10_000, help="the large collection's size")
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    parser.add_argument("--profile", metavar="CASE", help="profile this case on the first backend")
    parser.add_argument("--backend", default="", help="run only the backends whose name has this")
    parser.add_argument("--on-task", action="store_true", help="pass a no-op on_task callback")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[tuple[str, str, float, float]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="compozy-engine-defs-") as tmp, ExitStack() as stack:
        defs = definitions(Path(tmp))
        selected = [c for c in cases(args.large) if args.only in c.name]
        with backends(stack, args.postgres_url) as found:
            print(
                f"compozy engine benchmark on {os.cpu_count()} CPUs ({platform.machine()}), "
                f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
                f"{args.rounds} runs per small case (median), one per large case"
                + (", with a no-op on_task" if args.on_task else "")
            )
            profiled = False
            for name, store, where in found:
                if args.backend not in name:
                    continue
                if where:
                    notes.append(f"{name}: {where}")
                with Engine(store, defs) as engine:
                    run_once(engine, store, cases(1000)[-1], args.on_task)  # warm-up
                    for case in selected:
                        rounds = 1 if case.large else args.rounds
                        print(f"  {name}: {case.name} x{rounds}", file=sys.stderr, flush=True)
                        times = [run_once(engine, store, case, args.on_task) for _ in range(rounds)]
                        took = statistics.median(times)
                        rows.append((name, case.name, took, case.tasks / took))
                    chosen = [c for c in cases(args.large) if c.name == args.profile]
                    if chosen and not profiled:
                        profiled = True
                        profile(engine, store, chosen[0], args.on_task)
    print_table(rows)
    for backend, target in TARGETS.items():
        got = [r[3] for r in rows if r[0] == backend and r[1] == TARGET_CASE]
        if got:
            verdict = "met" if got[0] >= target else "NOT met"
            print(
                f"target: {TARGET_CASE} on {backend} >= {target:,.0f} tasks/s: "
                f"{got[0]:,.0f} -> {verdict}"
            )
    for note in notes:
        print(f"note: {note}")
    print("note: ONE run on a shared machine: compare figures within this run, not absolutes.")
    print(f"wall time: {time.perf_counter() - started:.1f} s")


def print_table(rows: list[tuple[str, str, float, float]]) -> None:
    cells = [["backend", "case", "seconds", "tasks/s"]]
    cells += [[b, c, f"{s:.3f}", f"{t:,.0f}"] for b, c, s, t in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    for n, row in enumerate(cells):
        print(
            " | ".join(
                [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
                + [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
            )
        )
        if n == 0:
            print("-+-".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
