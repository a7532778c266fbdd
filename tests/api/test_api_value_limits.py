"""The store's value rules through HTTP, on every backend: one JSON depth limit, times that no
database can store, and choices in any letter case. Each is a 4xx JSON error, never a 500."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.auth import Role
from compozy.core import MAX_JSON_DEPTH, Status
from compozy.store import Store

START = "/api/v0/workflows/hello/executions"
WORKFLOWS = "/api/v0/executions/workflows"
JSON_HEADERS = {"Content-Type": "application/json"}


def _input_nested(levels: int) -> str:
    """A request body whose input is objects nested ``levels`` deep (the input is one)."""
    return '{"input": ' + '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1) + "}"


def test_input_nested_to_the_limit_is_accepted(
    client: TestClient, member: Any, starter: Any
) -> None:
    response = client.post(
        START, content=_input_nested(MAX_JSON_DEPTH), headers=member.headers | JSON_HEADERS
    )

    assert response.status_code == 202, response.text
    [(_, received)] = starter.calls
    assert json.dumps(received).count("{") == MAX_JSON_DEPTH


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 400])
def test_input_nested_deeper_is_a_422_naming_the_input_and_the_limit(
    client: TestClient, member: Any, starter: Any, levels: int
) -> None:
    response = client.post(
        START, content=_input_nested(levels), headers=member.headers | JSON_HEADERS
    )

    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("body.input: ")
    too_deep = "input is nested too deeply: its objects and arrays nest deeper than"
    assert f"{too_deep} {MAX_JSON_DEPTH} levels" in message
    assert starter.calls == []


def test_a_body_nested_past_what_json_can_parse_is_a_400_not_a_500(
    client: TestClient, member: Any, starter: Any
) -> None:
    body = '{"input": ' + "[" * 5000 + "]" * 5000 + "}"

    response = client.post(START, content=body, headers=member.headers | JSON_HEADERS)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BadRequest"
    assert starter.calls == []


def test_a_cursor_naming_a_time_outside_years_1_to_9999_in_utc_is_refused(
    client: TestClient, member: Any, workflow_factory: Any
) -> None:
    # Year 1 at +05:00 is in year 0 in UTC: it once reached the database and came back a 500.
    workflow_factory.create()
    raw = json.dumps(["0001-01-01T00:00:00+05:00", "x"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")

    response = client.get(WORKFLOWS, params={"cursor": cursor}, headers=member.headers)

    assert response.status_code == 422, response.text
    assert response.json()["error"] == {
        "code": "ValidationError",
        "message": f"cursor {cursor!r} is not one this server gave out; start again without a "
        "cursor",
    }


@pytest.mark.parametrize("spelling", ["success", "Success", "SUCCESS"])
def test_the_status_filter_is_read_in_any_letter_case(
    client: TestClient, member: Any, workflow_factory: Any, spelling: str
) -> None:
    done = workflow_factory.create(
        status=Status.SUCCESS, created_at=datetime(2030, 1, 1, tzinfo=UTC)
    )
    workflow_factory.create(status=Status.RUNNING)

    response = client.get(WORKFLOWS, params={"status": spelling}, headers=member.headers)

    assert response.status_code == 200, response.text
    assert [item["workflow_exec_id"] for item in response.json()["items"]] == [
        done.workflow_exec_id
    ]


def test_an_unknown_status_is_still_a_422(client: TestClient, member: Any) -> None:
    response = client.get(WORKFLOWS, params={"status": "finished"}, headers=member.headers)

    assert response.status_code == 422
    assert "query.status" in response.json()["error"]["message"]


def test_a_role_is_read_in_any_letter_case(
    client: TestClient, admin: Any, compozy_store: Store
) -> None:
    response = client.post(
        "/api/v0/users", json={"email": "ada@example.com", "role": "ADMIN"}, headers=admin.headers
    )

    assert response.status_code == 201, response.text
    assert response.json()["role"] == "admin"
    assert compozy_store.auth.get_user_by_id(response.json()["id"]).role is Role.ADMIN
