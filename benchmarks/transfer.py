"""Export and import speed and peak memory: a SQLite file to PostgreSQL and back.

    python benchmarks/transfer.py [--postgres-url URL] [--sizes 20000,200000]

For each size, a SQLite file is filled (plain SQL through the raw driver, not measured) with
that many task states, ten per execution (one top-level task and nine children), each with a
1 KB input. Then four steps each run in a fresh process, so that memory is the step's alone:

1. ``compozy export`` of the SQLite file to a file;
2. ``compozy import`` of that file into a new PostgreSQL database;
3. ``compozy export`` of the PostgreSQL database;
4. ``compozy import`` of that into a new SQLite file.

Each step prints rows per second (all tables) and its peak memory: the process's peak resident
set size during the step (VmHWM, reset just before the step through /proc/self/clear_refs)
minus its resident size just before it (interpreter, imports and an open Store). The two
exports' checksums are compared. Everything happens in a temporary folder and a new database,
dropped at the end. Figures vary from run to run on a shared VM: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import sql

from compozy.config import DatabaseConfig
from compozy.core import new_id
from compozy.core.values import format_timestamp
from compozy.store import open_store
from compozy.transfer import export_data, import_data, open_input, open_output

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5433/postgres"
TASKS_PER_EXECUTION = 10
INPUT = {"text": "x" * 1000}  # about 1 KB once JSON


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def step(kind: str, config: dict[str, Any], path: str) -> None:
    """One measured step, in this (fresh) process; prints its figures as JSON."""
    with open_store(DatabaseConfig(**config, auto_migrate=False)) as store:
        before = _kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        started = time.perf_counter()
        if kind == "export":
            with open_output(path) as out:
                summary = export_data(store, out)
        else:
            with open_input(path) as source:
                summary = import_data(store, source)
        seconds = time.perf_counter() - started
        peak = _kib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": summary.rows,
                "rss_before_kib": before,
                "peak_growth_kib": max(peak - before, 0),
                "checksums": {t: s.sha256 for t, s in summary.tables.items()},
            }
        )
    )


def fill_sqlite(path: Path, tasks: int) -> None:
    """A migrated SQLite file holding ``tasks`` task states (ten per execution)."""
    open_store(DatabaseConfig(driver="sqlite", path=str(path))).close()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    text = json.dumps(INPUT)
    with sqlite3.connect(path) as raw:
        for first in range(0, tasks // TASKS_PER_EXECUTION, 1000):
            workflows, states = [], []
            for n in range(first, min(first + 1000, tasks // TASKS_PER_EXECUTION)):
                stamp = format_timestamp(t0 + timedelta(seconds=n))
                wf = new_id()
                workflows.append((wf, "bench", "SUCCESS", text, stamp, stamp))
                top = new_id()
                for k in range(TASKS_PER_EXECUTION):
                    task = top if k == 0 else new_id()
                    parent = None if k == 0 else top
                    kind = "parallel" if k == 0 else "basic"
                    states.append((task, f"t{k}", "bench", wf, parent, kind, text, stamp, stamp))
            raw.executemany(
                "INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, input, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                workflows,
            )
            raw.executemany(
                "INSERT INTO task_states (task_exec_id, task_id, workflow_id, workflow_exec_id, "
                "parent_state_id, component, status, execution_type, input, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, 'task', 'SUCCESS', ?, ?, ?, ?)",
                states,
            )


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    name = f"bench_transfer_{os.getpid()}_{new_id()[-6:].lower()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run_step(kind: str, config: dict[str, Any], path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--step", kind, "--config", json.dumps(config), str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _facts(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT current_setting('server_version'), current_setting('fsync')")
        version, fsync = row.fetchone() or ("?", "?")
    return f"PostgreSQL {version} (fsync={fsync})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("COMPOZY_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="a server and a role that may CREATE DATABASE",
    )
    parser.add_argument("--sizes", default="20000,200000", help="task states per run")
    parser.add_argument("--step", choices=["export", "import"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step(args.step, json.loads(args.config), args.path)
        return

    print(
        f"compozy export/import benchmark: {os.cpu_count()} CPUs ({platform.machine()}, a shared "
        f"VM), Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{_facts(args.postgres_url)}. One run: compare ratios, not absolute figures."
    )
    header = f"{'task states':>11} {'step':<26} {'rows':>8} {'s':>7} {'rows/s':>8} {'peak MiB':>9}"
    print(header)
    peaks: dict[str, dict[int, float]] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        with ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compozy-xfer-")))
            pg_url = stack.enter_context(postgres_database(args.postgres_url))
            source, back = folder / "source.db", folder / "back.db"
            fill_sqlite(source, size)
            sqlite_cfg = {"driver": "sqlite", "path": str(source)}
            back_cfg = {"driver": "sqlite", "path": str(back)}
            pg_cfg = {"driver": "postgres", "conn_string": pg_url}
            steps = [
                ("export SQLite file", "export", sqlite_cfg, folder / "a.jsonl"),
                ("import into PostgreSQL", "import", pg_cfg, folder / "a.jsonl"),
                ("export PostgreSQL", "export", pg_cfg, folder / "b.jsonl"),
                ("import into a SQLite file", "import", back_cfg, folder / "b.jsonl"),
            ]
            sums = []
            for label, kind, config, path in steps:
                r = run_step(kind, config, path)
                mib = r["peak_growth_kib"] / 1024
                peaks.setdefault(label, {})[size] = mib
                print(
                    f"{size:>11,} {label:<26} {r['rows']:>8,} {r['seconds']:>7.2f} "
                    f"{r['rows'] / r['seconds']:>8,.0f} {mib:>9.1f}"
                )
                if kind == "export":
                    sums.append(r["checksums"])
            print(f"{'':>11} checksums of both exports equal: {sums[0] == sums[1]}")
    sizes = sorted(next(iter(peaks.values())))
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        print(f"peak memory at {large:,} / at {small:,} task states (target ≤ 1.5):")
        for label, by_size in peaks.items():
            ratio = by_size[large] / by_size[small] if by_size[small] else float("inf")
            print(
                f"  {label:<26} {by_size[small]:.1f} MiB -> {by_size[large]:.1f} MiB: {ratio:.2f}x"
            )


if __name__ == "__main__":
    main()
