"""Latency of POST .../executions + completion, 10 executions at once, per backend.

    python benchmarks/api_latency.py [POSTGRES_URL] [--rounds N]

Serves `compozy start` in a child process on a SQLite file and on PostgreSQL (the URL, else
COMPOZY_TEST_POSTGRES_URL, else a throwaway local cluster), then, round after round, releases
10 client threads at once; each POSTs an execution of a small workflow (a format task, then a
parallel task with two children) and polls its detail until it is terminal. The figure is the
time from sending the POST to seeing the terminal state. One run on a noisy machine.

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
from pathlib import Path

import httpx

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.config import DatabaseConfig
from compozy.store import open_store
from compozy_testkit.provision.postgres import PostgresUnavailable, acquire, unique_prefix

CONCURRENT = 10
WORKFLOW = """\
id: hello
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
    """Workflow file, config, a migrated database with an admin; returns the admin's API key."""
    (root / "workflows").mkdir(parents=True)
    (root / "workflows" / "hello.yaml").write_text(WORKFLOW)
    (root / "compozy.yaml").write_text(
        "workflows: [workflows/*.yaml]\nworker: {max_concurrent_workflows: 10}\n"
    )
    with open_store(config.model_copy(update={"auto_migrate": True})) as store:
        admin = store.auth.create_initial_admin_if_none(User(email="bench@x.io", role=Role.ADMIN))
        key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        store.auth.create_api_key(key)
    return plaintext


def one_execution(client: httpx.Client, headers: dict[str, str]) -> float:
    """Seconds from the POST to the terminal state."""
    start = time.perf_counter()
    response = client.post(
        "/api/v0/workflows/hello/executions", json={"input": {"name": "Ada"}}, headers=headers
    )
    response.raise_for_status()
    path = f"/api/v0/executions/workflows/{response.json()['workflow_exec_id']}"
    while True:
        body = client.get(path, headers=headers).json()
        if body["status"] in ("SUCCESS", "FAILED", "TIMED_OUT", "CANCELED"):
            if body["status"] != "SUCCESS":
                raise SystemExit(f"execution ended {body['status']}: {body.get('error')}")
            return time.perf_counter() - start
        time.sleep(0.005)


def measure(client: httpx.Client, key: str, rounds: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    samples: list[float] = []
    lock = threading.Lock()

    def run(barrier: threading.Barrier, keep: bool) -> None:
        barrier.wait()
        elapsed = one_execution(client, headers)
        if keep:
            with lock:
                samples.append(elapsed)

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


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(
        f"{name:<40} n={len(ordered):<4} p50 {statistics.median(ordered) * 1000:7.1f} ms   "
        f"p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


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
        f"once x {args.rounds} rounds; one run on a noisy shared machine"
    )
    with tempfile.TemporaryDirectory(prefix="cpzy-api-") as tmp:
        root = Path(tmp)
        sqlite = DatabaseConfig(driver="sqlite", path=str(root / "sqlite" / "state.db"))
        key = prepare(root / "sqlite", sqlite)
        with serve(root / "sqlite", ["--db-driver", "sqlite", "--db-path", str(sqlite.path)]) as c:
            # compozy's SQLite setting: WAL with synchronous=NORMAL (durable at checkpoints).
            report("sqlite file (WAL, synchronous=NORMAL)", measure(c, key, args.rounds))
        try:
            server = acquire(args.postgres_url or os.environ.get("COMPOZY_TEST_POSTGRES_URL"))
        except PostgresUnavailable as exc:
            print(f"postgres     skipped: {exc}")
        else:
            name = f"{unique_prefix()}_api"
            try:
                url = server.create_database(name)
                key = prepare(root / "postgres", DatabaseConfig(conn_string=url))
                flags = ["--db-driver", "postgres", "--db-conn-string", url]
                with serve(root / "postgres", flags) as client:
                    report(f"postgres ({_durability(url)})", measure(client, key, args.rounds))
            finally:
                server.drop_database(name)
                server.stop()
    print(f"wall time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
