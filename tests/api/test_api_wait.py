"""``GET /api/v0/executions/workflows/{exec_id}?wait=``: the long-poll, with the real engine.

The answer comes once the execution is terminal, or when the wait is over with the state it has
then; without ``wait`` (or with 0) at once, as before. Across processes: tests/integration/
test_wakeups.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.core import Status
from compozy.engine import Engine, parse_definition
from compozy.store import Store
from compozy.workflow import WorkflowState

HELLO = {
    "id": "hello",
    "tasks": [
        {"id": "greet", "tool": "format", "with": {"template": "Hello!"}},
        {"id": "nap", "tool": "sleep", "with": {"seconds": 0.3}},
    ],
}
DETAIL = "/api/v0/executions/workflows/{}"


@pytest.fixture
def engine(compozy_store: Store) -> Iterator[Engine]:
    # A poll far longer than the test: only the engine's signal can end a wait early.
    with Engine(
        compozy_store, {"hello": parse_definition(HELLO)}, poll_interval=30, lease=60
    ) as real:
        yield real


@pytest.fixture
def waiting_client(compozy_store: Store, engine: Any, app_factory: Any) -> Iterator[TestClient]:
    with TestClient(app_factory(compozy_store, engine=engine)) as client:
        yield client


def test_wait_answers_with_the_finished_execution(waiting_client: TestClient, member: Any) -> None:
    started = waiting_client.post("/api/v0/workflows/hello/executions", headers=member.headers)
    exec_id = started.json()["workflow_exec_id"]
    body = waiting_client.get(
        DETAIL.format(exec_id), params={"wait": 30}, headers=member.headers
    ).json()
    assert body["status"] == "SUCCESS"
    assert [t["task_id"] for t in body["tasks"]] == ["greet", "nap"]
    assert {t["status"] for t in body["tasks"]} == {"SUCCESS"}
    # Once terminal, the same body as without waiting.
    again = waiting_client.get(DETAIL.format(exec_id), params={"wait": 5}, headers=member.headers)
    assert again.json() == waiting_client.get(DETAIL.format(exec_id), headers=member.headers).json()


def test_wait_over_answers_with_the_state_then(
    waiting_client: TestClient, compozy_store: Store, member: Any
) -> None:
    # Stored PENDING for a workflow no engine here runs: it stays PENDING.
    state = WorkflowState(workflow_id="elsewhere", status=Status.PENDING, input={})
    exec_id = compozy_store.workflows.upsert_state(state).workflow_exec_id
    response = waiting_client.get(
        DETAIL.format(exec_id), params={"wait": 0.3}, headers=member.headers
    )
    assert response.status_code == 200
    assert response.json()["status"] == "PENDING"


def test_without_an_engine_the_wait_reads_the_database(
    compozy_store: Store, app_factory: Any, engine: Any, member: Any
) -> None:
    # The app has no engine to signal it (a server of its own); the engine runs elsewhere.
    exec_id = engine.start("hello")
    with TestClient(app_factory(compozy_store)) as client:
        body = client.get(DETAIL.format(exec_id), params={"wait": 30}, headers=member.headers)
    assert body.json()["status"] == "SUCCESS"


@pytest.mark.parametrize("wait", ["-1", "60.5", "soon", "nan", "inf"])
def test_a_wait_out_of_range_is_422(waiting_client: TestClient, member: Any, wait: str) -> None:
    response = waiting_client.get(DETAIL.format("x"), params={"wait": wait}, headers=member.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"]


def test_waiting_for_an_unknown_execution_is_404_at_once(
    waiting_client: TestClient, member: Any
) -> None:
    response = waiting_client.get(
        DETAIL.format("nope"), params={"wait": 30}, headers=member.headers
    )
    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]


def test_wait_needs_a_key(waiting_client: TestClient) -> None:
    assert waiting_client.get(DETAIL.format("x"), params={"wait": 1}).status_code == 401
