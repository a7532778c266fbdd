"""`compozy start` as a real process: serving, running workflows, restarts and a crash."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_support import SHARED_BACKENDS, Cli, Result, assert_one_error_line, db_flags, run_compozy

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.cli.start import _startup_line, _startup_warnings
from compozy.config import Config, DatabaseConfig, WorkerConfig
from compozy.store import open_store
from compozy_testkit.databases import TestDatabase

WORKFLOWS = {
    "hello": """\
id: hello
tasks:
  - {id: greet, tool: format, with: {template: "Hello, {{ input.name }}!"}}
  - id: both
    type: parallel
    tasks:
      - {id: a, tool: echo, with: {n: 1}}
      - {id: b, tool: echo, with: {n: 2}}
outputs:
  greeting: "{{ tasks.greet.output.text }}"
""",
    "nap": """\
id: nap
tasks:
  - {id: nap, tool: sleep, with: {seconds: 1.5}}
""",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(
    project: Path, flags: list[str]
) -> Iterator[tuple[httpx.Client, subprocess.Popen[str]]]:
    """`compozy start` in a child process, and a client once /health answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "compozy.cli", "start", "--port", str(port), *flags],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "compozy start did not answer in 60 s"
            time.sleep(0.1)
        yield client, process
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _project(root: Path, database: TestDatabase) -> tuple[Path, str]:
    """Workflows, a migrated database with an admin, and that admin's API key."""
    (root / "workflows").mkdir(parents=True)
    for name, text in WORKFLOWS.items():
        (root / "workflows" / f"{name}.yaml").write_text(text)
    (root / "compozy.yaml").write_text("workflows: [workflows/*.yaml]\n")
    assert database.config is not None
    with open_store(database.config.model_copy(update={"auto_migrate": True})) as store:
        admin = store.auth.create_initial_admin_if_none(User(email="ops@x.io", role=Role.ADMIN))
        key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
        store.auth.create_api_key(key)
    return root, plaintext


def _until(
    client: httpx.Client, path: str, headers: dict[str, str], status: set[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body = client.get(path, headers=headers).json()
        if body["status"] in status:
            return body  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


@SHARED_BACKENDS
def test_start_runs_workflows_and_keeps_them_across_a_restart(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    project, key = _project(tmp_path / "p", compozy_empty_database)
    headers = {"Authorization": f"Bearer {key}"}
    flags = db_flags(compozy_empty_database)
    with _serving(project, flags) as (client, _):
        assert client.get("/api/v0/executions/workflows").status_code == 401
        started = client.post(
            "/api/v0/workflows/hello/executions", json={"input": {"name": "Ada"}}, headers=headers
        )
        assert started.status_code == 202, started.text
        path = f"/api/v0/executions/workflows/{started.json()['workflow_exec_id']}"
        finished = _until(client, path, headers, {"SUCCESS", "FAILED"})
        assert finished["status"] == "SUCCESS"
        assert finished["output"] == {"greeting": "Hello, Ada!"}
    with _serving(project, flags) as (client, _):
        assert client.get(path, headers=headers).json() == finished


@SHARED_BACKENDS
def test_an_execution_running_when_the_process_dies_is_resumed_after_its_lease(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    project, key = _project(tmp_path / "p", compozy_empty_database)
    (project / "compozy.yaml").write_text(
        "workflows: [workflows/*.yaml]\nruntime: {lease: 1s, poll_interval: 0.2s}\n"
    )
    headers = {"Authorization": f"Bearer {key}"}
    flags = db_flags(compozy_empty_database)
    with _serving(project, flags) as (client, process):
        started = client.post("/api/v0/workflows/nap/executions", json={}, headers=headers)
        path = f"/api/v0/executions/workflows/{started.json()['workflow_exec_id']}"
        _until(client, path, headers, {"RUNNING"})
        process.kill()  # no clean shutdown: the execution is left RUNNING under a lease
        process.wait()
    with _serving(project, flags) as (client, process):
        state = _until(client, path, headers, {"SUCCESS", "FAILED"})
    assert state["status"] == "SUCCESS"
    assert state["tasks"][0]["status"] == "SUCCESS"
    assert "Resuming execution" in (process.stderr.read() if process.stderr else "")


def test_start_refuses_sqlite_with_pgvector(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "compozy.yaml"
    config.write_text(
        "database: {driver: sqlite, path: x.db}\n"
        "knowledge: {vector_dbs: [{id: docs, provider: pgvector, dimension: 8}]}\n"
    )
    result = cli("start", "--config", str(config))
    assert "Qdrant, Redis or Filesystem" in assert_one_error_line(result)
    assert not (tmp_path / "x.db").exists()


def test_startup_warns_about_sqlite_in_production_and_too_many_workers() -> None:
    sqlite = DatabaseConfig(driver="sqlite", path=":memory:")
    calm = Config(database=sqlite)
    assert _startup_warnings(calm) == []
    busy = Config(
        database=sqlite, environment="production", worker=WorkerConfig(max_concurrent_workflows=11)
    )
    warnings = _startup_warnings(busy)
    assert len(warnings) == 2
    assert "production" in warnings[0]
    assert "11" in warnings[1]
    postgres = Config(
        database=DatabaseConfig(conn_string="postgresql://u@h/d"),
        environment="production",
        worker=WorkerConfig(max_concurrent_workflows=50),
    )
    assert _startup_warnings(postgres) == []


def test_the_startup_line_names_driver_location_and_guidance() -> None:
    config = Config(database=DatabaseConfig(driver="sqlite", path=":memory:"))
    with open_store(config.database) as store:
        line = _startup_line(config, store, "127.0.0.1", 5001)
    assert "http://127.0.0.1:5001" in line
    assert "sqlite in-memory (one writer at a time" in line
    pg = Config(database=DatabaseConfig(conn_string="postgresql://u:secret@h/d"))
    # Opening a PostgreSQL store without migrating it does not connect.
    with open_store(pg.database.model_copy(update={"auto_migrate": False})) as store:
        pg_line = _startup_line(pg, store, "0.0.0.0", 80)
    assert "postgres h:5432/d (pool of 5+10 connections)" in pg_line
    assert "secret" not in pg_line


@pytest.mark.parametrize("flag", [["--port", "notaport"], ["--port", "70000"]])
def test_a_bad_port_is_a_user_error(cli: Cli, tmp_path: Path, flag: list[str]) -> None:
    config = tmp_path / "compozy.yaml"
    config.write_text("database: {driver: sqlite, path: x.db}\n")
    assert_one_error_line(cli("start", "--config", str(config), *flag))


def _start(project: Path, *args: str) -> Result:
    """`compozy start ARGS` in a child process, for runs that end on their own."""
    return run_compozy("start", *args, cwd=project)


def _one_error_line(result: Result) -> str:
    assert "compozy 0.1.0 on http" not in result.err  # no banner before the error
    return assert_one_error_line(result)


def test_a_port_in_use_is_one_error_line_and_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _start(tmp_path, "--db-driver", "sqlite", "--db-path", "x.db", "--port", str(port))
    line = _one_error_line(result)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is in use")
    assert "--port" in line
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("no-such-host.invalid", "it is not an IP address or a name that resolves"),
        ("192.0.2.1", "192.0.2.1 is not an address of this machine"),  # TEST-NET-1
    ],
)
def test_a_host_it_cannot_listen_on_is_one_error_line(
    tmp_path: Path, host: str, expected: str
) -> None:
    result = _start(
        tmp_path, "--db-driver", "sqlite", "--db-path", "x.db", "--host", host, "--port", "5001"
    )
    assert expected in _one_error_line(result)


def test_an_in_memory_database_gets_an_admin_key_printed_once(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "workflows").mkdir(parents=True)
    for name, text in WORKFLOWS.items():
        (project / "workflows" / f"{name}.yaml").write_text(text)
    (project / "compozy.yaml").write_text(
        "workflows: [workflows/*.yaml]\nserver: {max_body_bytes: 2000}\n"
    )
    flags = ["--db-driver", "sqlite", "--db-path", ":memory:"]
    with _serving(project, flags) as (client, process):
        assert process.stdout is not None
        key = process.stdout.readline().strip()
        headers = {"Authorization": f"Bearer {key}"}
        workflows = client.get("/api/v0/workflows", headers=headers)
        started = client.post(
            "/api/v0/workflows/hello/executions", json={"input": {"name": "Ada"}}, headers=headers
        )
        path = f"/api/v0/executions/workflows/{started.json()['workflow_exec_id']}"
        _until(client, path, headers, {"SUCCESS"})
        metrics = client.get("/metrics").text
        too_large = client.post(
            "/api/v0/workflows/hello/executions",
            json={"input": {"name": "x" * 3000}},
            headers=headers,
        )
    assert key.startswith("cpzy_")
    assert workflows.status_code == 200, workflows.text
    assert [w["workflow_id"] for w in workflows.json()["items"]] == ["hello", "nap"]
    assert started.status_code == 202
    assert 'compozy_workflow_executions{workflow_id="hello",status="SUCCESS"} 1' in metrics
    assert (
        'compozy_workflow_execution_duration_seconds_count{workflow_id="hello",status="SUCCESS"} 1'
        in metrics
    )
    assert too_large.status_code == 413
    assert "2000 bytes" in too_large.json()["error"]["message"]
    err = process.stderr.read() if process.stderr else ""
    assert "in-memory database: created the admin admin@localhost" in err
    assert key not in err


@SHARED_BACKENDS
def test_a_database_without_users_says_how_to_make_the_first_admin(
    tmp_path: Path, compozy_empty_database: TestDatabase
) -> None:
    (tmp_path / "compozy.yaml").write_text("workflows: []\n")
    with _serving(tmp_path, db_flags(compozy_empty_database)) as (client, process):
        assert client.get("/api/v0/workflows").status_code == 401
    err = process.stderr.read() if process.stderr else ""
    warnings = [line for line in err.splitlines() if "no users" in line]
    assert warnings == [
        "warning: the database has no users, so no API key can call the API yet; create the "
        "first admin with `compozy users create EMAIL --role admin`, then its key with "
        "`compozy keys create --user EMAIL`"
    ]


def test_log_level_and_access_log(tmp_path: Path) -> None:
    (tmp_path / "compozy.yaml").write_text("workflows: []\n")
    flags = ["--db-driver", "sqlite", "--db-path", "x.db", "--log-level", "INFO", "--access-log"]
    with _serving(tmp_path, flags) as (client, process):
        client.get("/api/v0/executions/workflows?limit=1", headers={"Authorization": "Bearer x"})
    err = process.stderr.read() if process.stderr else ""
    assert "info: Application startup complete." in err
    access = [line for line in err.splitlines() if '"GET /api/v0/executions' in line]
    assert len(access) == 1
    assert re.fullmatch(
        r"\S+ 127\.0\.0\.1 \"GET /api/v0/executions/workflows\?limit=1 HTTP/1\.1\" 401 \d+ "
        r"[\d.]+ms",
        access[0],
    )
    assert "Bearer" not in err


def test_the_default_log_level_shows_no_info_and_no_access_log(tmp_path: Path) -> None:
    (tmp_path / "compozy.yaml").write_text("workflows: []\n")
    with _serving(tmp_path, ["--db-driver", "sqlite", "--db-path", "x.db"]) as (client, process):
        client.get("/health")
    err = process.stderr.read() if process.stderr else ""
    assert "info:" not in err
    assert '"GET /health' not in err


def test_a_bad_log_level_is_a_user_error(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "compozy.yaml"
    config.write_text("database: {driver: sqlite, path: x.db}\n")
    line = assert_one_error_line(cli("start", "--config", str(config), "--log-level", "loud"))
    assert "server.log_level is 'loud'" in line
    assert "debug, info, warning, error" in line
