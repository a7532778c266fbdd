"""POST /api/v0/workflows/{workflow_id}/executions with the real engine, then reading it back.

Written against the engine's public interface (``Engine(store, definitions)``, ``start``,
``wait``, ``close``, ``load_definitions``, ``UnknownWorkflow``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import compozy.engine as engine_module
from compozy.api import ExecutionStarter
from compozy.store import Store

HELLO = """\
id: hello
input:
  type: object
  properties: {name: {type: string}}
  required: [name]
tasks:
  - {id: greet, tool: format, with: {template: "Hello, {{ input.name }}!"}}
  - id: pair
    type: parallel
    tasks:
      - {id: left, tool: echo, with: {side: left}}
      - {id: right, tool: echo, with: {side: right}}
"""

START = "/api/v0/workflows/{}/executions"


@pytest.fixture
def engine(compozy_store: Store, tmp_path: Path) -> Iterator[Any]:
    """The real engine with the ``hello`` workflow, closed (work finished) after the test."""
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO, encoding="utf-8")
    real = engine_module.Engine(compozy_store, engine_module.load_definitions([path]))
    yield real
    real.close(wait=True)


@pytest.fixture
def engine_client(compozy_store: Store, engine: Any, app_factory: Any) -> Iterator[TestClient]:
    """A client of the app serving the real engine."""
    with TestClient(app_factory(compozy_store, engine=engine)) as client:
        yield client


def test_the_engine_satisfies_the_protocol(engine: Any) -> None:
    starter: ExecutionStarter = engine  # what create_app's engine= parameter takes
    assert callable(starter.start)
    assert "hello" in engine.definitions


def test_start_then_read_the_finished_execution_and_its_tree(
    engine_client: TestClient, engine: Any, member: Any
) -> None:
    response = engine_client.post(
        START.format("hello"), json={"input": {"name": "Ada"}}, headers=member.headers
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["workflow_id"] == "hello"
    assert started["status"] == "PENDING"
    exec_id = started["workflow_exec_id"]

    assert engine.wait(exec_id, timeout=30).status.value == "SUCCESS"
    detail = engine_client.get(f"/api/v0/executions/workflows/{exec_id}", headers=member.headers)
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "SUCCESS"
    assert body["input"] == {"name": "Ada"}
    roots = {task["task_id"]: task for task in body["tasks"]}
    assert set(roots) == {"greet", "pair"}
    assert roots["greet"]["output"]["text"] == "Hello, Ada!"
    assert roots["pair"]["execution_type"] == "parallel"
    assert {child["task_id"] for child in roots["pair"]["children"]} == {"left", "right"}

    progress = engine_client.get(
        f"/api/v0/executions/tasks/{roots['pair']['task_exec_id']}/progress",
        headers=member.headers,
    )
    assert progress.json()["success_count"] == 2
    assert progress.json()["completion_rate"] == 1.0

    listing = engine_client.get(
        "/api/v0/executions/workflows",
        params={"workflow_id": "hello", "status": "SUCCESS"},
        headers=member.headers,
    )
    assert [item["workflow_exec_id"] for item in listing.json()["items"]] == [exec_id]


def test_unknown_workflow_is_404_and_nothing_is_stored(
    engine_client: TestClient, member: Any, compozy_store: Store
) -> None:
    response = engine_client.post(START.format("nope"), json={}, headers=member.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UnknownWorkflow"
    assert "hello" in response.json()["error"]["message"]  # it lists the known ids
    assert compozy_store.workflows.list_states() == []


@pytest.mark.parametrize("body", [{}, {"input": {}}, {"input": {"name": 3}}])
def test_input_the_schema_refuses_is_422_and_nothing_is_stored(
    engine_client: TestClient, member: Any, compozy_store: Store, body: Any
) -> None:
    response = engine_client.post(START.format("hello"), json=body, headers=member.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "ValidationError"
    assert "name" in response.json()["error"]["message"]
    assert compozy_store.workflows.list_states() == []


def test_the_workflows_route_lists_the_engines_definitions(
    engine_client: TestClient, member: Any
) -> None:
    response = engine_client.get("/api/v0/workflows", headers=member.headers)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {
                "workflow_id": "hello",
                "description": None,
                "input_schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                },
                "outputs": [],
                "tasks": [
                    {
                        "task_id": "greet",
                        "type": "basic",
                        "tool": "format",
                        "description": None,
                        "tasks": [],
                    },
                    {
                        "task_id": "pair",
                        "type": "parallel",
                        "tool": None,
                        "description": None,
                        "tasks": [
                            {
                                "task_id": side,
                                "type": "basic",
                                "tool": "echo",
                                "description": None,
                                "tasks": [],
                            }
                            for side in ("left", "right")
                        ],
                    },
                ],
            }
        ]
    }
    assert engine_client.get("/api/v0/workflows").status_code == 401


def test_without_an_engine_there_are_no_workflows_to_list(
    compozy_store: Store, app_factory: Any, member: Any
) -> None:
    with TestClient(app_factory(compozy_store)) as client:
        response = client.get("/api/v0/workflows", headers=member.headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NoEngine"
