"""Latency of POST .../executions + completion, 10 executions at once, per backend.

    python benchmarks/api_latency.py [POSTGRES_URL] [--rounds N]

Serves `compozy start` in a child process on a SQLite file and on PostgreSQL (the URL, else
COMPOZY_TEST_POSTGRES_URL, else a throwaway local cluster), then, round after round, releases
10 client threads at once; each POSTs an execution and long-polls its detail (`?wait=30`)
until it is terminal (a last line per database polls every 5 ms instead, as clients without
the long-poll do).
The figure is the time from sending the POST to seeing the terminal state. Two workflows: the
`hello` that `compozy init` writes (the target: p99 <= 50 ms on a SQLite file, <= 100 ms on
PostgreSQL) and a slightly bigger one (a format task, then a parallel task with two children).

Under each `hello` line, a timeline: the median of each stage of an execution, from the
client's clock and the timestamps stored in its rows (one host, one clock): the POST until the
row is stored, until its first task row (the claim and the run's start), until its last task
write, until the execution's final write, and until the client sees it. One run on a noisy
machine.

Each line names its durability: the SQLite file runs as compozy runs it (WAL,
synchronous=NORMAL); PostgreSQL as the server is configured, and the throwaway cluster of the
test kit runs with fsync and synchronous_commit off, so its commits cost far less than on a
production server. Compare like with like.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.cli.init import EXAMPLE_WORKFLOW
from compozy.config import DatabaseConfig
from compozy.store import Store, open_store
from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

CONCURRENT = 10
TARGETS = {"sqlite": 0.050, "postgres": 0.100}  # p99 of `hello`, end to end (issue 12)
BIGGER = """\
id: bigger
tasks:
  - {id: greet, tool: format, with: {template: "Hello, {{ input.name }}!"}}
  - id: both
    type: parallel
    tasks:
      - {id: a, tool: echo, with: {n: 1}}
      - {id: b, tool: format, with: {template: "{{ tasks.greet.output.text | upper }}"}}
outputs:
  greeting: "{{ tasks.greet.output.text }}"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(project: Path, flags: list[str]) -> Iterator[httpx.Client]:
    """`compozy start` in a child process; a client once /health answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "compozy.cli", "start", "--port", str(port), *flags],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"compozy start exited: {process.communicate()[1]}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("compozy start did not answer in 60 s")
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.send_signal(signal.SIGINT)
        process.wait(30)


def prepare(root: Path, config: DatabaseConfig) -> str:
    """Workflow files, config, a migrated database with an admin; returns the admin's API key."""
    (root / "workflows").mkdir(parents=True)
    (root / "workflows" / "hello.yaml").write_text(EXAMPLE_WORKFLOW)
    (root / "workflows" / "bigger.yaml").write_text(BIGGER)
    (root / "compozy.yaml").write_text(
        "workflows: [workflows/*.yaml]\nworker: {max_concurrent_workflows: 10}\n"
    )
    with open_store(config.model_copy(update={"auto_migrate": True})) as store:
        admin = store.auth.create_initial_admin_if_none(User(email="bench@x.io", role=Role.ADMIN))
        key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        store.auth.create_api_key(key)
    return plaintext


@dataclass(frozen=True)
class Sample:
    """One execution as the client saw it: wall-clock times (time.time(), the rows' clock)."""

    exec_id: str
    sent: float
    accepted: float  # the POST's answer arrived
    seen: float  # the client read the terminal state

    @property
    def elapsed(self) -> float:
        return self.seen - self.sent


def one_execution(
    client: httpx.Client, headers: dict[str, str], workflow: str, poll: bool
) -> Sample:
    """POST an execution, then long-poll its detail (``?wait=``) until it is terminal; with
    ``poll``, GET it every 5 ms instead (what a client without the long-poll does)."""
    sent = time.time()
    response = client.post(
        f"/api/v0/workflows/{workflow}/executions", json={"input": {"name": "Ada"}}, headers=headers
    )
    response.raise_for_status()
    accepted = time.time()
    exec_id = response.json()["workflow_exec_id"]
    path = f"/api/v0/executions/workflows/{exec_id}"
    params = {} if poll else {"wait": 30}
    while True:
        body = client.get(path, headers=headers, params=params).json()
        if body["status"] in ("SUCCESS", "FAILED", "TIMED_OUT", "CANCELED"):
            if body["status"] != "SUCCESS":
                raise SystemExit(f"execution ended {body['status']}: {body.get('error')}")
            return Sample(exec_id, sent, accepted, time.time())
        time.sleep(0.005)


def measure(
    client: httpx.Client, key: str, workflow: str, rounds: int, poll: bool = False
) -> list[Sample]:
    headers = {"Authorization": f"Bearer {key}"}
    samples: list[Sample] = []
    lock = threading.Lock()

    def run(barrier: threading.Barrier, keep: bool) -> None:
        barrier.wait()
        sample = one_execution(client, headers, workflow, poll)
        if keep:
            with lock:
                samples.append(sample)

    for round_ in range(rounds + 1):  # round 0 warms up
        barrier = threading.Barrier(CONCURRENT)
        threads = [
            threading.Thread(target=run, args=(barrier, round_ > 0)) for _ in range(CONCURRENT)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return samples


def _p99(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def report(name: str, samples: list[Sample], target: float | None = None) -> None:
    ordered = sorted(s.elapsed for s in samples)
    p99 = _p99(ordered)
    print(
        f"  {name:<26} n={len(ordered):<4} p50 {statistics.median(ordered) * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )
    if target is not None:
        verdict = "met" if p99 <= target else "NOT met"
        print(f"  {'':<26} target p99 <= {target * 1000:.0f} ms: {verdict}")


def timeline(store: Store, samples: list[Sample]) -> None:
    """The median of each stage, from the client's clock and the stored rows' timestamps."""
    stages: dict[str, list[float]] = {name: [] for name, _ in _STAGES}
    for sample in samples:
        state = store.workflows.get_state(sample.exec_id)
        tasks = list(state.tasks.values())
        first_task = min(t.created_at for t in tasks).timestamp()
        last_task = max(t.updated_at for t in tasks).timestamp()
        points = [
            sample.sent,
            state.created_at.timestamp(),
            first_task,
            last_task,
            state.updated_at.timestamp(),
            sample.seen,
        ]
        for (name, _), start, end in zip(_STAGES, points, points[1:], strict=False):
            stages[name].append(end - start)
        stages["POST answered"].append(sample.accepted - sample.sent)
    for name, meaning in _STAGES:
        print(f"    {name:<24} {statistics.median(stages[name]) * 1000:7.1f} ms  {meaning}")


_STAGES = (
    ("POST -> row stored", "request, auth, validation, the INSERT"),
    ("stored -> first task", "the worker wakes, claims, reads it, stores its first task"),
    ("first -> last task", "the tasks run and are stored"),
    ("last task -> finished", "the execution's final write"),
    ("finished -> client sees", "the long-poll's answer (or the client's next poll)"),
    ("POST answered", "(from sending the POST, for comparison)"),
)


def run_backend(
    label: str, driver: str, root: Path, config: DatabaseConfig, flags: list[str], rounds: int
) -> None:
    """Serve one database and measure both workflows on it."""
    key = prepare(root, config)
    print(label)
    with serve(root, flags) as client, open_store(config) as store:
        samples = measure(client, key, "hello", rounds)
        report("hello (compozy init's)", samples, TARGETS[driver])
        timeline(store, samples)
        report("format + parallel of two", measure(client, key, "bigger", rounds))
        report("hello, polling every 5 ms", measure(client, key, "hello", rounds, poll=True))


def _durability(url: str) -> str:
    """The server's fsync and synchronous_commit: a test cluster often runs with both off,
    which makes every commit far cheaper than on a production server."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
        ).fetchone()
    fsync, sync = row if row else ("?", "?")
    return f"fsync={fsync}, synchronous_commit={sync}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("postgres_url", nargs="?")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 10 executions")
    args = parser.parse_args()
    started = time.perf_counter()
    print(
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; {CONCURRENT} executions at "
        f"once x {args.rounds} rounds per workflow; one run on a noisy shared machine"
    )
    with tempfile.TemporaryDirectory(prefix="cpzy-api-") as tmp:
        root = Path(tmp)
        sqlite = DatabaseConfig(driver="sqlite", path=str(root / "sqlite" / "state.db"))
        # compozy's SQLite setting: WAL with synchronous=NORMAL (durable at checkpoints).
        run_backend(
            "sqlite file (WAL, synchronous=NORMAL)",
            "sqlite",
            root / "sqlite",
            sqlite,
            ["--db-driver", "sqlite", "--db-path", str(sqlite.path)],
            args.rounds,
        )
        try:
            server = acquire(args.postgres_url or os.environ.get("COMPOZY_TEST_POSTGRES_URL"))
        except PostgresUnavailable as exc:
            print(f"postgres     skipped: {exc}")
        else:
            name = f"{unique_prefix()}_api"
            try:
                url = server.create_database(name)
                run_backend(
                    f"postgres ({_durability(url)})",
                    "postgres",
                    root / "postgres",
                    DatabaseConfig(conn_string=url),
                    ["--db-driver", "postgres", "--db-conn-string", url],
                    args.rounds,
                )
            finally:
                server.drop_database(name)
                server.stop()
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
