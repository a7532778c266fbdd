"""The same requests against PostgreSQL and a SQLite file give the same answers.

``transcript(store)`` seeds a store with fixed data, sends a scripted sequence of requests
(reads, writes, refusals) and records every status, challenge header and body with generated
ids, keys and timestamps replaced by placeholders. The test runs it on the postgres backend's
store and on a SQLite file it opens itself, and compares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key
from compozy.config import DatabaseConfig
from compozy.core import Component, ExecutionType, Status, format_timestamp, new_id
from compozy.errors import NotFoundError
from compozy.store import Store, open_store
from compozy.task import TaskState
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowState

T0 = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
FIXED_TIMES = {format_timestamp(T0 + timedelta(seconds=s)) for s in range(20)}
KSUID = re.compile(r"\b[0-9A-Za-z]{27}\b")
API_KEY = re.compile(r"cpzy_[0-9A-Za-z]+_[0-9A-Za-z]+")
PREFIX = re.compile(r'"prefix": "[0-9A-Za-z]+"')
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
W = "/api/v0/executions/workflows"
T = "/api/v0/executions/tasks"


class Starter:
    """Starts nothing, but answers like an engine that knows the ``hello`` workflow."""

    def start(self, workflow_id: str, input: dict[str, Any] | None) -> str:
        if workflow_id != "hello":
            raise NotFoundError(f"no workflow definition with id {workflow_id!r}")
        return new_id()


def _seed(store: Store) -> None:
    def at(seconds: int) -> datetime:
        return T0 + timedelta(seconds=seconds)

    usage = UsageSummary(
        entries=[
            UsageEntry(provider="openai", model="gpt", prompt_tokens=5, completion_tokens=2),
            UsageEntry(provider="anthropic", model="claude", prompt_tokens=1, source="task"),
        ]
    )
    for exec_id, workflow_id, status, seconds in [
        ("exec-a", "alpha", Status.SUCCESS, 0),
        ("exec-b", "beta", Status.FAILED, 1),
        ("exec-c", "alpha", Status.RUNNING, 2),
    ]:
        store.workflows.upsert_state(
            WorkflowState(
                workflow_exec_id=exec_id,
                workflow_id=workflow_id,
                status=status,
                input={"n": seconds, "text": "ünï ☃", "f": 0.1, "nested": {"l": [1, None]}},
                usage=usage if exec_id == "exec-a" else None,
                created_at=at(seconds),
            )
        )

    def task(task_exec_id: str, parent: str | None, status: Status, seconds: int) -> None:
        store.tasks.upsert_state(
            TaskState(
                task_exec_id=task_exec_id,
                task_id=task_exec_id.removeprefix("t-"),
                workflow_id="alpha",
                workflow_exec_id="exec-a",
                parent_state_id=parent,
                component=Component.TASK,
                status=status,
                execution_type=ExecutionType.PARALLEL if parent is None else ExecutionType.BASIC,
                tool_id=None if parent is None else "echo",
                output={"seconds": seconds},
                usage=usage if parent is None else None,
                created_at=at(seconds),
            )
        )

    task("t-root", None, Status.SUCCESS, 3)
    task("t-one", "t-root", Status.SUCCESS, 4)
    task("t-two", "t-root", Status.FAILED, 5)
    task("t-deep", "t-two", Status.CANCELED, 6)
    task("t-other", None, Status.SUCCESS, 7)


def _normalise(text: str, ids: dict[str, str]) -> str:
    text = API_KEY.sub("<api key>", text)
    text = PREFIX.sub('"prefix": "<prefix>"', text)
    text = TIMESTAMP.sub(lambda m: m.group() if m.group() in FIXED_TIMES else "<time>", text)
    return KSUID.sub(lambda m: ids.setdefault(m.group(), f"<id {len(ids) + 1}>"), text)


def transcript(store: Store, app_factory: Callable[..., FastAPI]) -> list[dict[str, Any]]:
    """Seed ``store``, run the script through the API and return the normalised exchanges."""
    _seed(store)
    admin = store.auth.create_user(User(email="admin@example.com", role=Role.ADMIN))
    key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    store.auth.create_api_key(key)
    as_admin = {"Authorization": f"Bearer {plaintext}"}
    ids: dict[str, str] = {}
    records: list[dict[str, Any]] = []

    with TestClient(app_factory(store, engine=Starter())) as client:

        def send(method: str, path: str, headers: dict[str, str] | None = None, **kw: Any) -> Any:
            response = client.request(method, path, headers=headers, **kw)
            body = response.json() if response.content else None
            if path == "/health":
                assert body is not None
                body["driver"] = "<driver>"
            records.append(
                {
                    "request": f"{method} {_normalise(path, ids)}",
                    "status": response.status_code,
                    "challenge": response.headers.get("WWW-Authenticate"),
                    "body": json.loads(_normalise(json.dumps(body, sort_keys=True), ids)),
                }
            )
            return body

        send("GET", "/health")
        send("GET", W)
        send("GET", W, {"Authorization": "Basic x"})
        send("GET", W, {"Authorization": "Bearer cpzy_unknown_key"})
        send("GET", W, as_admin)
        send("GET", W, as_admin, params={"status": "SUCCESS"})
        send("GET", W, as_admin, params={"workflow_id": "alpha"})
        send("GET", W, as_admin, params={"workflow_id": "alpha", "status": "RUNNING"})
        send("GET", W, as_admin, params={"status": "running"})
        send("GET", W, as_admin, params={"colour": "red"})
        send("GET", f"{W}/exec-a", as_admin)
        send("GET", f"{W}/exec-c", as_admin)
        send("GET", f"{W}/missing", as_admin)
        send("GET", f"{W}/{'x' * 256}", as_admin)
        send("GET", f"{T}/t-two", as_admin)
        send("GET", f"{T}/t-root/progress", as_admin)
        send("GET", f"{T}/t-deep/progress", as_admin)
        send("GET", f"{T}/missing/progress", as_admin)
        send("POST", "/api/v0/workflows/hello/executions", as_admin, json={"input": {"a": 1}})
        send("POST", "/api/v0/workflows/nope/executions", as_admin, json={})
        send("POST", "/api/v0/workflows/hello/executions", as_admin, json={"input": [1]})

        bob = send("POST", "/api/v0/users", as_admin, json={"email": "Bob@Example.com"})
        send("POST", "/api/v0/users", as_admin, json={"email": "bob@example.COM"})
        send("POST", "/api/v0/users", as_admin, json={"email": "not-an-email"})
        send("POST", "/api/v0/users", as_admin, json={"email": "c@example.com", "role": "boss"})
        send("GET", "/api/v0/users", as_admin)
        made = send("POST", f"/api/v0/users/{bob['id']}/api-keys", as_admin)
        as_bob = {"Authorization": f"Bearer {made['api_key']}"}
        send("GET", "/api/v0/users", as_bob)
        send("GET", W, as_bob, params={"workflow_id": "beta"})
        send("GET", f"/api/v0/users/{bob['id']}/api-keys", as_admin)
        send("GET", "/api/v0/users/nobody/api-keys", as_admin)
        send("DELETE", f"/api/v0/api-keys/{made['id']}", as_admin)
        send("GET", W, as_bob)
        send("DELETE", f"/api/v0/api-keys/{made['id']}", as_admin)
        send("DELETE", f"/api/v0/users/{bob['id']}", as_admin)
        send("DELETE", f"/api/v0/users/{bob['id']}", as_admin)
        send("GET", "/api/v0/users", as_admin)
        send("GET", "/api/v0/nowhere", as_admin)
        send("PATCH", "/api/v0/users", as_admin)
    return records


@pytest.mark.compozy_backends("postgres", reason="compares PostgreSQL with a SQLite file")
def test_postgres_and_sqlite_file_answer_the_same(
    compozy_store: Store, app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    on_postgres = transcript(compozy_store, app_factory)
    with open_store(DatabaseConfig(driver="sqlite", path=str(tmp_path / "parity.db"))) as sqlite:
        on_sqlite = transcript(sqlite, app_factory)

    assert compozy_store.driver == "postgres"
    assert len(on_postgres) == 39
    for on_pg, on_lite in zip(on_postgres, on_sqlite, strict=True):
        assert on_pg == on_lite
    # The script reached every kind of answer, so the comparison covered them all.
    assert {r["status"] for r in on_postgres} == {200, 201, 202, 204, 401, 403, 404, 405, 409, 422}
