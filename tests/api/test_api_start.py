"""POST /api/v0/workflows/{workflow_id}/executions against an ExecutionStarter test double.

These pin the HTTP side of starting (status codes, body, what reaches the engine) without the
engine; test_executions_post.py runs the same route against the real engine once it exists.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.core import parse_id
from compozy.errors import ValidationError
from compozy.store import Store

START = "/api/v0/workflows/{}/executions"


def test_start_returns_202_pending_with_the_exec_id(
    client: TestClient, member: Any, starter: Any
) -> None:
    response = client.post(
        START.format("hello"), json={"input": {"name": "Ada"}}, headers=member.headers
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"workflow_exec_id", "workflow_id", "status"}
    assert parse_id(body["workflow_exec_id"]) == body["workflow_exec_id"]
    assert body["workflow_id"] == "hello"
    assert body["status"] == "PENDING"
    assert starter.calls == [("hello", {"name": "Ada"})]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"json": {}}, {"json": {"input": None}}, {"json": None}],
    ids=["no-body", "empty-object", "null-input", "null-body"],
)
def test_input_is_optional(client: TestClient, member: Any, starter: Any, kwargs: Any) -> None:
    response = client.post(START.format("hello"), headers=member.headers, **kwargs)
    assert response.status_code == 202, response.text
    assert starter.calls == [("hello", None)]


def test_unknown_workflow_is_404(client: TestClient, member: Any, starter: Any) -> None:
    response = client.post(START.format("nope"), json={"input": {}}, headers=member.headers)
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "UnknownWorkflowStub",
        "message": "workflow 'nope' is not defined",
    }


def test_input_the_engine_refuses_is_422_with_its_message(
    client: TestClient, member: Any, starter: Any
) -> None:
    starter.error = ValidationError("input.name is required by workflow hello's input schema")
    response = client.post(START.format("hello"), json={"input": {}}, headers=member.headers)
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "ValidationError",
        "message": "input.name is required by workflow hello's input schema",
    }


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ('{"input": [1, 2]}', "body.input"),
        ('{"input": "text"}', "body.input"),
        ('{"input": {}, "extra": 1}', "body.extra"),
        ('{"input": {"x": NaN}}', "NaN"),
        ('{"input": {"x": Infinity}}', "infinite"),
        ('{"input": {"x": "a\\u0000b"}}', "U+0000"),
        ('{"input": ' + '{"a": ' * 70 + "1" + "}" * 70 + "}", "deeper than 64"),
        ("[]", "body"),
    ],
)
def test_input_neither_database_can_store_is_422_before_the_engine(
    client: TestClient, member: Any, starter: Any, content: str, where: str
) -> None:
    response = client.post(
        START.format("hello"),
        content=content.encode(),
        headers={**member.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert where in response.json()["error"]["message"]
    assert starter.calls == []


def test_bad_workflow_ids_are_422(client: TestClient, member: Any, starter: Any) -> None:
    for workflow_id in ("w" * 256, "%00"):
        response = client.post(START.format(workflow_id), headers=member.headers)
        assert response.status_code == 422
    assert starter.calls == []


def test_without_an_engine_starting_is_503(
    compozy_store: Store, app_factory: Any, member: Any
) -> None:
    with TestClient(app_factory(compozy_store)) as client:
        response = client.post(START.format("hello"), json={}, headers=member.headers)
        listing = client.get("/api/v0/executions/workflows", headers=member.headers)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NoEngine"
    assert listing.status_code == 200  # reading needs no engine


def test_starting_needs_a_key(client: TestClient, starter: Any) -> None:
    response = client.post(START.format("hello"), json={"input": {}})
    assert response.status_code == 401
    assert starter.calls == []
