"""The error mapping: one JSON shape for every failure, and the status of each error type."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError as PydanticValidationError

from compozy.api.errors import STATUS_BY_ERROR, status_for
from compozy.api.models import (
    EMAIL_PATTERN,
    MAX_INPUT_DEPTH,
    CreateUserRequest,
    StartExecutionRequest,
)
from compozy.errors import (
    AlreadyBootstrapped,
    APIKeyNotFound,
    CompozyError,
    ConfigError,
    ConstraintViolation,
    DuplicateKey,
    EmailExists,
    StoreUnavailable,
    TaskNotFound,
    UserNotFound,
    ValidationError,
    WorkflowNotFound,
    WorkflowNotReady,
)
from compozy.store import Store

START = "/api/v0/workflows/hello/executions"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (WorkflowNotFound("x"), 404),
        (TaskNotFound("x"), 404),
        (UserNotFound("x"), 404),
        (APIKeyNotFound("x"), 404),
        (ValidationError("x"), 422),
        (EmailExists("x"), 409),
        (DuplicateKey("x"), 409),
        (AlreadyBootstrapped("x"), 409),
        (ConstraintViolation("x"), 409),
        (WorkflowNotReady("x"), 409),
        (StoreUnavailable("x"), 503),
        (ConfigError("x"), 500),
        (CompozyError("x"), 500),
    ],
)
def test_status_for_each_compozy_error(error: CompozyError, status: int) -> None:
    assert status_for(error) == status


def test_mapping_table_has_no_shadowed_entry() -> None:
    # First match wins: an entry after one of its base classes would never be used.
    seen: list[type[CompozyError]] = []
    for error_type, _ in STATUS_BY_ERROR:
        assert not any(issubclass(error_type, earlier) for earlier in seen), error_type
        seen.append(error_type)


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (WorkflowNotReady("workflow e1 has running tasks"), 409, "workflow e1 has running tasks"),
        (ConstraintViolation("foreign key: user u1"), 409, "foreign key: user u1"),
        (StoreUnavailable("cannot reach db.internal:5432"), 503, "database is unavailable"),
        (ConfigError("tools.x is not importable"), 500, "server failed"),
    ],
)
def test_errors_raised_in_a_route_have_the_json_shape(
    client: TestClient, member: Any, starter: Any, error: Exception, status: int, message: str
) -> None:
    starter.error = error
    response = client.post(START, json={}, headers=member.headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {"code": type(error).__name__, "message": response.json()["error"]["message"]}
    }
    assert message in response.json()["error"]["message"]


def test_server_side_details_stay_out_of_5xx_bodies(
    client: TestClient, member: Any, starter: Any
) -> None:
    starter.error = StoreUnavailable("cannot reach db.internal:5432")
    response = client.post(START, json={}, headers=member.headers)
    assert "db.internal" not in response.text


def test_unexpected_exception_is_a_json_500(
    compozy_store: Store, app_factory: Any, member: Any, starter: Any
) -> None:
    starter.error = RuntimeError("secret internals")
    app = app_factory(compozy_store, engine=starter)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(START, json={}, headers=member.headers)
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalError"
    assert "secret internals" not in response.text


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/api/v0/nothing/here")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "RouteNotFound", "message": "no route matches GET /api/v0/nothing/here"}
    }


def test_wrong_method_is_a_json_405_with_allow(client: TestClient, member: Any) -> None:
    response = client.put("/api/v0/executions/workflows", headers=member.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "MethodNotAllowed"
    assert "GET" in response.headers["allow"]


def test_messages_quoting_the_request_stay_encodable(client: TestClient, member: Any) -> None:
    # The key is echoed in the validation message; a lone surrogate in it must not break JSON.
    response = client.post(
        START,
        content=b'{"input": {}, "\\ud800": 1}',
        headers={**member.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "RequestValidationError"


# --- request models: refused before any SQL ------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"s": "\ud800"},
        {"\udfff": 1},
        {"list": ["ok", "\x00"]},
        {"n": float("nan")},
        {"n": float("-inf")},
        {"t": (1, 2)},
    ],
)
def test_start_request_refuses_unstorable_input(value: dict[str, Any]) -> None:
    with pytest.raises(PydanticValidationError):
        StartExecutionRequest(input=value)


def test_start_request_depth_limit() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_INPUT_DEPTH - 1):
        node["a"] = {}
        node = node["a"]
    assert StartExecutionRequest(input=deep).input == deep
    node["a"] = {}
    with pytest.raises(PydanticValidationError, match="deeper than"):
        StartExecutionRequest(input=deep)


def test_create_user_request_refuses_lone_surrogates() -> None:
    with pytest.raises(PydanticValidationError, match=r"unicode|surrogate"):
        CreateUserRequest(email="a\ud800@example.com")


def test_email_pattern_excludes_everything_python_calls_whitespace() -> None:
    # User.validate refuses emails with str.isspace() characters; the documented pattern must
    # refuse them too, or schema-valid requests would get a 422.
    pattern = re.compile(EMAIL_PATTERN)
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert spaces
    assert [hex(ord(c)) for c in spaces if pattern.match(f"a{c}b@example.com")] == []
    assert pattern.match("ada@example.com")
    assert pattern.match("we@ird@example.com")  # the domain starts after the last @


def test_pattern_failures_say_what_is_wrong_not_the_regex(client: TestClient, admin: Any) -> None:
    email = client.post("/api/v0/users", json={"email": "not-an-email"}, headers=admin.headers)
    assert email.status_code == 422
    assert email.json()["error"]["message"] == (
        "body.email: is not an email address of the form name@domain without spaces"
    )
    nul = client.get("/api/v0/executions/workflows/%00", headers=admin.headers)
    assert nul.status_code == 422
    assert nul.json()["error"]["message"] == (
        "path.exec_id: contains the character U+0000, which cannot be stored"
    )
