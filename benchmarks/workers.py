"""Throughput, latency, kill -9 recovery and paging of `compozy worker` processes on one database.

    python benchmarks/workers.py [--postgres-url URL] [--executions N] [--skip-postgres]

Everything happens in a fresh temporary directory (config files, workflow files, worker logs,
SQLite files) and a fresh PostgreSQL database (created here, dropped at the end); nothing is
written to the repository.

1. Throughput: 1, 2 and 4 `python -m compozy.cli worker` processes on one PostgreSQL database,
   1 and 2 on one SQLite file, each with ``max_concurrent_workflows: 4``, ``lease: 3s`` and
   ``poll_interval: 0.2s``, running a workflow of 5 short tasks (builtin format/echo). The
   workers are started and idle first (start-up and imports are not measured, and a small
   warm-up batch, 4 per worker, runs first); then N executions are stored PENDING in ONE
   committed transaction, and the clock runs from that commit to the newest ``updated_at`` of
   the batch (the moment the last one was finished, as stored by its worker).
2. Latency: with the same workers still running, executions are stored one at a time at a
   steady rate of half the throughput just measured (so queueing does not dominate); the
   latency is ``updated_at - created_at`` of each once SUCCESS: store, claim, 5 tasks, finish.
3. kill -9: worker A holds 4 executions of a workflow whose middle task sleeps; worker B is up
   and idle; A gets SIGKILL; the time until each execution is claimed again (claim_count 2,
   B's worker_id) splits into the lease A had left and B's detection (its poll).
4. Paging: 100,000 executions (5 task rows each, 1% FAILED) inserted with plain SQL through
   the raw driver of the store's engine (COPY on PostgreSQL, then ANALYZE as autovacuum would;
   one executemany transaction on SQLite), then ``store.workflows.list_page`` timed in this
   process (median of several calls after 3 untimed): the first page, a page ~99,000 rows deep
   (its cursor reached by following pages of 100) and a ``WorkflowFilter(status=FAILED)`` page.

CPU figures come from /proc: the worker processes, every process named postgres, this process,
and the rest of the machine (other tenants of a shared VM).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql
from psycopg.types.json import Jsonb

from compozy.config import DatabaseConfig
from compozy.core import TERMINAL_STATUSES, Status, new_id
from compozy.store import Store, open_store, sql_connection
from compozy.store.tables import task_states, workflow_states
from compozy.store.types import format_timestamp, json_text, parse_timestamp
from compozy.workflow import WorkflowFilter, WorkflowState

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5433/postgres"
LEASE = 3.0
POLL = 0.2
CAPACITY = 4  # worker.max_concurrent_workflows
SLEEP_SECONDS = 5  # the long task of the kill -9 workflow (B must start while A holds it)
FAILOVER_EXECUTIONS = CAPACITY
FAST = """\
id: five
tasks:
  - {id: greet, tool: format, with: {template: "Hello, {{ input.name }}!"}}
  - {id: again, tool: echo, with: {text: "{{ tasks.greet.output.text }}"}}
  - {id: shout, tool: format, with: {template: "{{ tasks.again.output.text | upper }}"}}
  - {id: count, tool: echo, with: {n: 5}}
  - {id: bye, tool: format, with: {template: "Bye, {{ input.name }}."}}
"""
SLOW = f"""\
id: slow
tasks:
  - {{id: greet, tool: format, with: {{template: "Hello, {{{{ input.name }}}}!"}}}}
  - {{id: nap, tool: sleep, with: {{seconds: {SLEEP_SECONDS}}}}}
  - {{id: bye, tool: echo, with: {{done: true}}}}
"""
TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
HZ = os.sysconf("SC_CLK_TCK")
_WF = workflow_states.c
Cells = tuple[str, str, str, str, str, str]
HEAD: Cells = ("measurement", "database", "workers", "result", "target", "detail")


# --- worker processes --------------------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def worker_id(self) -> str:
        found = re.search(r"^worker (\S+) on ", self.text(), re.MULTILINE)
        if found is None:
            raise SystemExit(f"no worker id in {self.log}:\n{self.text()}")
        return found[1]

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def complaints(self) -> int:
        """Lines the worker logged at warning level or above (but the SQLite vector DB note)."""
        return sum(
            line.startswith(("warning:", "error:", "critical:", "Traceback"))
            and "no vector DB is configured" not in line
            for line in self.text().splitlines()
        )


def spawn(config: Path, log: Path) -> Worker:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "compozy.cli", "worker", "--config", str(config)],
            cwd=config.parent,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return Worker(process, log)


def wait_ready(workers: Sequence[Worker], timeout: float = 90.0) -> None:
    """Until every worker has said it serves (it claims from then on)."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        while "Ctrl-C to stop" not in worker.text():
            if worker.process.poll() is not None:
                raise SystemExit(
                    f"worker exited with {worker.process.returncode}:\n{worker.text()}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"worker not ready after {timeout:g} s:\n{worker.text()}")
            time.sleep(0.05)


def stop(workers: Sequence[Worker]) -> None:
    """SIGINT (graceful stop), then SIGKILL whatever is still alive after 60 s."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGINT)
    for worker in workers:
        try:
            worker.process.wait(60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@contextmanager
def running(config: Path, count: int, label: str) -> Iterator[list[Worker]]:
    workers = [spawn(config, config.parent / f"{label}-{i}.log") for i in range(count)]
    try:
        wait_ready(workers)
        yield workers
    finally:
        stop(workers)


def machine_cpu() -> tuple[float, float]:
    """(busy, elapsed) CPU seconds of the whole machine, all cores, from /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    busy = user + nice + system + irq + softirq
    return busy / HZ, (busy + idle + iowait + steal) / HZ


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def process_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every process named postgres on this machine (server and backends)."""
    found: dict[int, float] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "postgres":
                    found[int(proc.name)] = process_cpu(int(proc.name))
            except OSError:
                continue
    return found


@dataclass
class CpuWindow:
    """CPU used between two snapshots: the machine, the workers, PostgreSQL, this process."""

    workers: Sequence[Worker]
    executions: int

    def __post_init__(self) -> None:
        self._machine = machine_cpu()
        self._own = own_cpu()
        self._workers = [w.cpu_seconds() for w in self.workers]
        self._postgres = postgres_cpu()

    def describe(self) -> str:
        busy, total = (b - a for a, b in zip(self._machine, machine_cpu(), strict=True))
        workers = sum(w.cpu_seconds() for w in self.workers) - sum(self._workers)
        server = sum(t - self._postgres.get(pid, 0.0) for pid, t in postgres_cpu().items())
        own = own_cpu() - self._own
        other = busy - workers - server - own
        cores = os.cpu_count() or 1
        per = 1000 / self.executions
        return (
            f"CPU: machine {100 * busy / total * cores:.0f}% of {100 * cores}%; workers "
            f"{workers * per:.0f} ms/exec, postgres processes {server * per:.0f} ms/exec, "
            f"bench {own * per:.0f} ms/exec, other tenants {other:.1f} s in {total / cores:.1f} s"
        )


# --- databases ---------------------------------------------------------------------------------


def write_config(root: Path, name: str, database: dict[str, Any]) -> Path:
    """A worker config; JSON is YAML, and quoting a URL needs no thought in JSON."""
    config = {
        "database": database,
        "workflows": [str(root / "workflows" / "*.yaml")],
        "worker": {"max_concurrent_workflows": CAPACITY},
        "runtime": {"lease": f"{LEASE:g}s", "poll_interval": f"{POLL:g}s"},
    }
    path = root / f"{name}.yaml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


@dataclass
class Target:
    """One database: its config section and a Store over it in this process."""

    kind: str  # postgres | sqlite
    database: dict[str, Any]
    store: Store


@contextmanager
def sqlite_target(root: Path, name: str) -> Iterator[Target]:
    """A new SQLite file."""
    database = {"driver": "sqlite", "path": str(root / f"{name}.db")}
    with open_store(DatabaseConfig(**database)) as store:
        yield Target("sqlite", database, store)


@contextmanager
def postgres_target(url: str) -> Iterator[Target]:
    """The bench database, emptied (the previous measurement's rows are gone)."""
    with open_store(DatabaseConfig(conn_string=url)) as store:
        with sql_connection(store, write=True) as conn:
            conn.execute(sa.text("TRUNCATE task_states, workflow_states"))
        yield Target("postgres", {"driver": "postgres", "conn_string": url}, store)


@contextmanager
def bench_database(admin_url: str) -> Iterator[tuple[str, str]]:
    """A fresh database on the server of ``admin_url``: (its URL, server facts); dropped after."""
    name = f"bench_workers_{os.getpid()}_{new_id()[-6:].lower()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        sync_commit = conn.execute("SHOW synchronous_commit").fetchone()
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    facts = (
        f"PostgreSQL {version[0] if version else '?'} (fsync={fsync[0] if fsync else '?'}, "
        f"synchronous_commit={sync_commit[0] if sync_commit else '?'})"
    )
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url, facts
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def enqueue(store: Store, workflow_id: str, count: int, tag: str) -> list[str]:
    """``count`` PENDING executions stored in ONE transaction: workers see them all at once."""
    with store.transaction() as tx:
        return [
            tx.workflows.upsert_state(
                WorkflowState(
                    workflow_id=workflow_id, status=Status.PENDING, input={"name": f"{tag}-{i}"}
                )
            ).workflow_exec_id
            for i in range(count)
        ]


def fetch(store: Store, ids: Sequence[str]) -> list[sa.Row[Any]]:
    stmt = sa.select(
        _WF.workflow_exec_id,
        _WF.status,
        _WF.created_at,
        _WF.updated_at,
        _WF.worker_id,
        _WF.claim_count,
        _WF.lease_expires_at,
    ).where(_WF.workflow_exec_id.in_(sa.bindparam("ids", expanding=True)))
    with sql_connection(store, write=False) as conn:
        return list(conn.execute(stmt, {"ids": list(ids)}))


def wait_terminal(store: Store, ids: Sequence[str], timeout: float) -> None:
    stmt = sa.select(sa.func.count()).where(
        _WF.workflow_exec_id.in_(sa.bindparam("ids", expanding=True)), _WF.status.in_(TERMINAL)
    )
    deadline = time.monotonic() + timeout
    while True:
        with sql_connection(store, write=False) as conn:
            done = conn.execute(stmt, {"ids": list(ids)}).scalar_one()
        if done == len(ids):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {done} of {len(ids)} executions terminal after {timeout:g} s")
        time.sleep(0.05)


def outcome(rows: Sequence[sa.Row[Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    if set(counts) == {Status.SUCCESS.value}:
        return f"all {len(rows)} SUCCESS"
    return "NOT ALL SUCCESS: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def nearest_rank(ordered: Sequence[float], fraction: float) -> float:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- 1 and 2: throughput and latency -----------------------------------------------------------


@dataclass
class Throughput:
    per_second: float
    cells: Cells


def throughput(target: Target, workers: list[Worker], n: int) -> Throughput:
    warm = enqueue(target.store, "five", CAPACITY * len(workers), "warm")
    wait_terminal(target.store, warm, 60 + len(warm))
    ids = enqueue(target.store, "five", n, "batch")
    committed = datetime.now(UTC)
    cpu = CpuWindow(workers, n)
    wait_terminal(target.store, ids, 120 + n)
    usage = cpu.describe()
    rows = fetch(target.store, ids)
    seconds = (max(r.updated_at for r in rows) - committed).total_seconds()
    by_worker: dict[str, int] = {}
    for row in rows:
        by_worker[row.worker_id] = by_worker.get(row.worker_id, 0) + 1
    per_worker = "/".join(str(c) for c in sorted(by_worker.values(), reverse=True))
    cells: Cells = (
        f"throughput ({n} queued at once)",
        target.kind,
        str(len(workers)),
        f"{n / seconds:.1f} exec/s",
        "",
        f"{seconds:.2f} s; {outcome(rows)}; per worker {per_worker}; {usage}",
    )
    return Throughput(n / seconds, cells)


def latency(
    target: Target, workers: list[Worker], rate: float, count: int, fraction: float
) -> Cells:
    ids: list[str] = []
    start = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        state = WorkflowState(workflow_id="five", status=Status.PENDING, input={"name": f"l-{i}"})
        ids.append(target.store.workflows.upsert_state(state).workflow_exec_id)
    posted = time.monotonic() - start
    wait_terminal(target.store, ids, 120 + count)
    rows = fetch(target.store, ids)
    first_task = first_tasks(target.store, ids)
    done = [r for r in rows if r.status == Status.SUCCESS.value]
    ms = sorted(millis(r.updated_at - r.created_at) for r in done)
    waits = [millis(first_task[r.workflow_exec_id] - r.created_at) for r in done]
    runs = [millis(r.updated_at - first_task[r.workflow_exec_id]) for r in done]
    complaints = sum(w.complaints() for w in workers)
    return (
        "latency created -> finished",
        target.kind,
        str(len(workers)),
        f"p50 {statistics.median(ms):.0f} ms, p99 {nearest_rank(ms, 0.99):.0f} ms",
        "",
        f"{count} posted one by one at {count / posted:.1f}/s ({fraction:.0%} of the throughput "
        f"above); min {ms[0]:.0f}, max {ms[-1]:.0f} ms; p50 split: stored -> first task "
        f"{statistics.median(waits):.0f} ms (poll {POLL * 1000:.0f} ms) + first task -> "
        f"finished {statistics.median(runs):.0f} ms; {outcome(rows)}; "
        f"worker logs: {complaints} warning/error lines",
    )


def millis(delta: timedelta) -> float:
    return delta.total_seconds() * 1000


def first_tasks(store: Store, ids: Sequence[str]) -> dict[str, datetime]:
    """exec id -> created_at of its first task row (just after its worker claimed it)."""
    t = task_states.c
    stmt = (
        sa.select(t.workflow_exec_id, sa.func.min(t.created_at))
        .where(t.workflow_exec_id.in_(sa.bindparam("ids", expanding=True)))
        .group_by(t.workflow_exec_id)
    )
    with sql_connection(store, write=False) as conn:
        return {
            exec_id: first if isinstance(first, datetime) else parse_timestamp(first)
            for exec_id, first in conn.execute(stmt, {"ids": list(ids)})
        }


def workers_rows(
    target_for: Callable[[str], AbstractContextManager[Target]],
    root: Path,
    kind: str,
    counts: Sequence[int],
    n: int,
    fraction: float,
    latency_seconds: float,
) -> list[Cells]:
    rows: list[Cells] = []
    for count in counts:
        label = f"{kind}-{count}w"
        print(f"  {label}: throughput and latency ...", file=sys.stderr, flush=True)
        with (
            target_for(label) as target,
            running(write_config(root, label, target.database), count, label) as workers,
        ):
            result = throughput(target, workers, n)
            rate = fraction * result.per_second
            posts = min(n, max(20, round(rate * latency_seconds)))
            rows += [result.cells, latency(target, workers, rate, posts, fraction)]
    return rows


# --- 3: kill -9 ---------------------------------------------------------------------------------


def held_by(store: Store, ids: Sequence[str], worker_id: str) -> bool:
    """Whether ``worker_id`` holds every execution and runs its sleep task right now."""
    rows = fetch(store, ids)
    if not all(r.worker_id == worker_id and r.status == Status.RUNNING.value for r in rows):
        return False
    stmt = sa.select(sa.func.count()).where(
        task_states.c.workflow_exec_id.in_(sa.bindparam("ids", expanding=True)),
        task_states.c.task_id == "nap",
        task_states.c.status == Status.RUNNING.value,
    )
    with sql_connection(store, write=False) as conn:
        return bool(conn.execute(stmt, {"ids": list(ids)}).scalar_one() == len(ids))


def failover(target: Target, root: Path) -> Cells:
    label = f"{target.kind}-kill"
    config = write_config(root, label, target.database)
    print(f"  {label}: kill -9 ...", file=sys.stderr, flush=True)
    a = spawn(config, root / f"{label}-A.log")
    b: Worker | None = None
    try:
        wait_ready([a])
        ids = enqueue(target.store, "slow", FAILOVER_EXECUTIONS, "kill")
        deadline = time.monotonic() + 30
        while not held_by(target.store, ids, a.worker_id):
            if time.monotonic() > deadline:
                raise SystemExit("worker A did not claim the executions in 30 s")
            time.sleep(0.02)
        b = spawn(config, root / f"{label}-B.log")
        wait_ready([b])
        if not held_by(target.store, ids, a.worker_id):
            raise SystemExit(f"A finished before B was up: raise SLEEP_SECONDS ({SLEEP_SECONDS})")
        killed = datetime.now(UTC)
        killed_at = time.monotonic()
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        expiry = {r.workflow_exec_id: r.lease_expires_at for r in fetch(target.store, ids)}
        resumed: dict[str, float] = {}
        deadline = killed_at + 3 * LEASE + 30
        while len(resumed) < len(ids):
            now = time.monotonic()
            for row in fetch(target.store, ids):
                if row.claim_count >= 2 and row.workflow_exec_id not in resumed:
                    resumed[row.workflow_exec_id] = now - killed_at
            if now > deadline:
                raise SystemExit(f"only {len(resumed)} of {len(ids)} resumed after {now:.0f} s")
            time.sleep(0.02)
        wait_terminal(target.store, ids, 60 + SLEEP_SECONDS)
        rows = fetch(target.store, ids)
        b_id = b.worker_id
        a_id = a.worker_id
    finally:
        stop([w for w in (a, b) if w is not None])
    left = [(expiry[i] - killed).total_seconds() for i in ids]
    detect = [resumed[i] - left_ for i, left_ in zip(ids, left, strict=True)]
    moved = all(r.claim_count == 2 and r.worker_id == b_id != a_id for r in rows)
    waits = sorted(resumed.values())
    return (
        "kill -9 -> resumed elsewhere",
        target.kind,
        "2 (A killed)",
        f"{statistics.mean(waits):.2f} s (lease {LEASE:g} s)",
        f"<= lease + poll = {LEASE + POLL:g} s",
        f"{len(ids)} executions, first {waits[0]:.2f} s, last {waits[-1]:.2f} s = lease left at "
        f"kill {statistics.mean(left):.2f} s + detection {statistics.mean(detect):.2f} s "
        f"(max {max(detect):.2f}; poll {POLL:g} s); claim_count 2 and B's worker_id: "
        f"{'yes' if moved else 'NO'}; then {outcome(rows)}",
    )


# --- 4: paging -----------------------------------------------------------------------------------


WF_COLUMNS = (
    "workflow_exec_id, workflow_id, status, input, output, created_at, updated_at, worker_id, "
    "claim_count"
)
TASK_COLUMNS = (
    "task_exec_id, task_id, workflow_id, workflow_exec_id, component, status, execution_type, "
    "tool_id, input, output, created_at, updated_at"
)


def seed_rows(executions: int, tasks_each: int) -> tuple[list[list[Any]], list[list[Any]]]:
    """Executions one second apart (so newest-first order is plain), 1% FAILED, with
    ``tasks_each`` SUCCESS task rows each; JSON values as dicts, times as aware datetimes."""
    base = datetime.now(UTC) - timedelta(seconds=executions + 3600)
    flows: list[list[Any]] = []
    tasks: list[list[Any]] = []
    for i in range(executions):
        exec_id = new_id()
        created = base + timedelta(seconds=i)
        status = Status.FAILED.value if i % 100 == 7 else Status.SUCCESS.value
        output = {"bye": {"output": {"text": f"Bye, n{i}."}}}
        finished = created + timedelta(milliseconds=80)
        flows.append(
            [exec_id, "five", status, {"name": f"n{i}"}, output, created, finished, "b:0:x", 1]
        )
        for j in range(tasks_each):
            at = created + timedelta(milliseconds=10 * j)
            done = at + timedelta(milliseconds=5)
            ids = [new_id(), f"t{j}", "five", exec_id]
            tasks.append([*ids, "task", "SUCCESS", "basic", "echo", {"n": j}, {"n": j}, at, done])
    return flows, tasks


def fill(target: Target, executions: int, tasks_each: int) -> float:
    """Insert the seed rows with the raw driver of the store's engine (COPY on PostgreSQL,
    executemany in one transaction on SQLite); seconds taken, building the rows included."""
    started = time.perf_counter()
    flows, tasks = seed_rows(executions, tasks_each)
    # The raw driver, outside the store: COPY and explicit transactions are the point here.
    if target.kind == "postgres":
        fairy: Any = psycopg.connect(target.database["conn_string"])
    else:
        fairy = sqlite3.connect(target.database["path"], isolation_level=None)
    try:
        raw: Any = fairy
        if target.kind == "postgres":
            with raw.cursor() as cursor:
                for table, columns, rows in (
                    ("workflow_states", WF_COLUMNS, flows),
                    ("task_states", TASK_COLUMNS, tasks),
                ):
                    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row([Jsonb(v) if isinstance(v, dict) else v for v in row])
            raw.commit()
            raw.autocommit = True  # ANALYZE, as autovacuum would have done on a grown table
            raw.execute("ANALYZE workflow_states, task_states")
            raw.autocommit = False
        else:
            raw.execute("BEGIN IMMEDIATE")
            for table, columns, rows in (
                ("workflow_states", WF_COLUMNS, flows),
                ("task_states", TASK_COLUMNS, tasks),
            ):
                marks = ", ".join("?" * len(rows[0])) if rows else ""
                raw.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                    ([sqlite_value(v) for v in row] for row in rows),
                )
            raw.execute("COMMIT")
    finally:
        fairy.close()
    return time.perf_counter() - started


def sqlite_value(value: Any) -> Any:
    """What the store writes to SQLite: compact JSON text and fixed-width UTC time text."""
    if isinstance(value, dict):
        return json_text(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    return value


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    for _ in range(3):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def paging(
    target: Target, executions: int, tasks_each: int, deep: int, repeats: int
) -> list[Cells]:
    print(f"  {target.kind}: paging over {executions:,} ...", file=sys.stderr, flush=True)
    filled = fill(target, executions, tasks_each)
    repo = target.store.workflows
    failed = WorkflowFilter(status=Status.FAILED)

    walk_started = time.perf_counter()
    cursor: str | None = None
    pages = 0
    for _ in range(deep):
        page = repo.list_page(limit=100, cursor=cursor)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    walk_ms = (time.perf_counter() - walk_started) * 1000 / pages
    deep_page = repo.list_page(limit=10, cursor=cursor)
    checks = {
        "first": len(repo.list_page(limit=10).items) == 10,
        "deep": len(deep_page.items) == 10 and deep_page.next_cursor is not None,
        "filtered": all(s.status is Status.FAILED for s in repo.list_page(failed, limit=10).items),
    }
    cases: list[tuple[str, Callable[[], object], str]] = [
        ("list_page(limit=10), first page", lambda: repo.list_page(limit=10), ""),
        (
            f"list_page(limit=10), {pages * 100:,} rows deep",
            lambda: repo.list_page(limit=10, cursor=cursor),
            f"cursor reached by {pages} pages of 100 at {walk_ms:.1f} ms a page; ",
        ),
        (
            "list_page(status=FAILED, limit=10)",
            lambda: repo.list_page(failed, limit=10),
            f"{executions // 100:,} FAILED of {executions:,}; ",
        ),
    ]
    rows: list[Cells] = [walk_while_inserting(target, executions)]
    for (name, call, note), ok in zip(cases, checks.values(), strict=True):
        ms = timed(call, repeats)
        median = statistics.median(ms)
        rows.append(
            (
                name,
                target.kind,
                "-",
                f"{median:.1f} ms",
                f"< 50 ms {'met' if median < 50 else 'MISSED'}",
                f"{note}median of {repeats}, p90 {nearest_rank(ms, 0.9):.1f} ms, max "
                f"{ms[-1]:.1f} ms; {executions:,} executions x {tasks_each} tasks "
                f"(inserted in {filled:.0f} s){'' if ok else '; PAGE CONTENT WRONG'}",
            )
        )
    return rows


def walk_while_inserting(target: Target, executions: int) -> Cells:
    """Read every page (limit 500) while another thread stores new executions: each execution
    that existed before the walk must come exactly once."""
    store = target.store
    with sql_connection(store) as conn:
        before = {row[0] for row in conn.execute(sa.select(_WF.workflow_exec_id))}
    done = threading.Event()
    inserted: list[str] = []

    def insert() -> None:
        while not done.is_set():
            state = WorkflowState(workflow_id="paging-new", status=Status.PENDING)
            inserted.append(store.workflows.upsert_state(state).workflow_exec_id)
            time.sleep(0.002)

    inserter = threading.Thread(target=insert, daemon=True)
    inserter.start()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    started = time.perf_counter()
    try:
        while True:
            page = store.workflows.list_page(limit=500, cursor=cursor)
            pages += 1
            seen.extend(item.workflow_exec_id for item in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        done.set()
        inserter.join()
    took = time.perf_counter() - started
    old = [exec_id for exec_id in seen if exec_id in before]
    exact = len(old) == len(set(old)) == len(before) and len(seen) == len(set(seen))
    with sql_connection(store, write=True) as conn:  # the later measurements see what they saw
        conn.execute(sa.delete(workflow_states).where(_WF.workflow_id == "paging-new"))
    return (
        "every execution once, paging all",
        target.kind,
        "-",
        f"{len(old):,} of {len(before):,} once" if exact else "REPEATED OR MISSED",
        "each exactly once " + ("met" if exact else "MISSED"),
        f"{pages} pages of 500 in {took:.1f} s while {len(inserted):,} new executions were "
        f"stored (newer, so before the cursor: {len(seen) - len(old)} of them seen)",
    )


# --- output --------------------------------------------------------------------------------------


def print_table(rows: list[Cells]) -> None:
    cells = [HEAD, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEAD) - 1)]
    for n, row in enumerate(cells):
        print(" | ".join([c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [row[-1]]))
        if n == 0:
            print("-+-".join("-" * w for w in widths) + "-+-" + "-" * 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("COMPOZY_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server and a role that may CREATE DATABASE (default: $COMPOZY_BENCH_POSTGRES_URL "
        f"or {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--executions", type=int, default=200, help="executions per throughput run")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--latency-fraction",
        type=float,
        default=0.5,
        help="latency runs post at this fraction of the measured throughput",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=15.0, help="how long each latency run posts"
    )
    parser.add_argument("--paging-rows", type=int, default=100_000, help="executions to page over")
    parser.add_argument("--paging-tasks", type=int, default=5, help="task rows per execution")
    parser.add_argument("--deep-pages", type=int, default=990, help="pages of 100 to walk")
    parser.add_argument("--repeats", type=int, default=21, help="timed calls per paging case")
    args = parser.parse_args()
    started = time.perf_counter()
    rows: list[Cells] = []
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compozy-workers-")))
        (root / "workflows").mkdir()
        (root / "workflows" / "five.yaml").write_text(FAST)
        (root / "workflows" / "slow.yaml").write_text(SLOW)
        pg_url, pg_facts = None, "PostgreSQL skipped"
        if not args.skip_postgres:
            pg_url, pg_facts = stack.enter_context(bench_database(args.postgres_url))
        cores = os.cpu_count()
        print(
            f"compozy worker benchmark: {cores} CPUs ({platform.machine()}, a shared VM), "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {pg_facts}"
        )
        print(
            f"Workers: max_concurrent_workflows {CAPACITY}, lease {LEASE:g} s, poll_interval "
            f"{POLL:g} s. Figures vary from run to run on this machine: compare ratios within "
            "one run, not absolute numbers. Load average at start: "
            + " ".join(f"{v:.1f}" for v in os.getloadavg())
            + " (other tenants' CPU during each throughput run is in its detail)."
        )
        if "fsync=off" in pg_facts:
            print(
                "PostgreSQL runs with fsync=off here: commits are not flushed to disk, so its "
                "write-heavy figures are better than a durable server would give."
            )
        print(
            "Throughput clock: workers already running and idle; from the commit that stores "
            "all N PENDING at once to the last execution's stored updated_at.",
            flush=True,
        )
        kinds: list[tuple[str, Callable[[str], AbstractContextManager[Target]], tuple[int, ...]]]
        kinds = [("sqlite", lambda label: sqlite_target(root, label), (1, 2))]
        if pg_url is not None:
            url = pg_url
            kinds.insert(0, ("postgres", lambda _label: postgres_target(url), (1, 2, 4)))
        for kind, target_for, counts in kinds:
            rows += workers_rows(
                target_for,
                root,
                kind,
                counts,
                args.executions,
                args.latency_fraction,
                args.latency_seconds,
            )
        for kind, target_for, _ in kinds:
            with target_for(f"{kind}-kill") as target:
                rows.append(failover(target, root))
        for kind, target_for, _ in kinds:
            with target_for(f"{kind}-paging") as target:
                rows += paging(
                    target, args.paging_rows, args.paging_tasks, args.deep_pages, args.repeats
                )
    print_table(rows)
    print(f"wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
