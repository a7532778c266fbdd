"""Keyset paging of the list routes: executions, users and a user's API keys.

Each list answers ``{"items": [...], "next_cursor": ...}``; following the cursors reads every
row exactly once, in the order of the unpaged list, whatever is inserted meanwhile.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from compozy.core import Status
from compozy.store import Store

WORKFLOWS = "/api/v0/executions/workflows"
USERS = "/api/v0/users"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _pages(
    client: TestClient, path: str, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    """Every page of ``path``, following next_cursor until it is null."""
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        response = client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursors never ended"


def _exec_ids(pages: list[dict[str, Any]]) -> list[str]:
    return [item["workflow_exec_id"] for page in pages for item in page["items"]]


# --- executions --------------------------------------------------------------------------------


def test_120_executions_in_pages_of_50_are_each_read_once_in_order(
    client: TestClient, member: Any, workflow_factory: Any, compozy_store: Store
) -> None:
    # Three executions per timestamp, so ties on created_at straddle the page boundaries.
    for i in range(120):
        workflow_factory.create(created_at=T0 + timedelta(seconds=i // 3))

    pages = _pages(client, WORKFLOWS, member.headers, limit=50)

    assert [len(page["items"]) for page in pages] == [50, 50, 20]
    assert [page["next_cursor"] is None for page in pages] == [False, False, True]
    expected = [s.workflow_exec_id for s in compozy_store.workflows.list_states()]
    assert _exec_ids(pages) == expected
    assert len(set(expected)) == 120


def test_default_limit_is_50(client: TestClient, member: Any, workflow_factory: Any) -> None:
    for i in range(51):
        workflow_factory.create(created_at=T0 + timedelta(seconds=i))

    pages = _pages(client, WORKFLOWS, member.headers)

    assert [len(page["items"]) for page in pages] == [50, 1]


def test_an_exact_fit_has_no_next_cursor(
    client: TestClient, member: Any, workflow_factory: Any
) -> None:
    for i in range(4):
        workflow_factory.create(created_at=T0 + timedelta(seconds=i))

    [page] = _pages(client, WORKFLOWS, member.headers, limit=4)

    assert len(page["items"]) == 4
    assert page["next_cursor"] is None


def test_an_empty_list_is_one_empty_page(client: TestClient, member: Any) -> None:
    assert _pages(client, WORKFLOWS, member.headers) == [{"items": [], "next_cursor": None}]


def test_filters_hold_on_every_page(
    client: TestClient, member: Any, workflow_factory: Any, compozy_store: Store
) -> None:
    for i in range(30):
        workflow_factory.create(
            workflow_id="alpha" if i % 2 else "beta",
            status=Status.SUCCESS if i % 3 else Status.FAILED,
            created_at=T0 + timedelta(seconds=i),
        )

    pages = _pages(
        client, WORKFLOWS, member.headers, limit=4, workflow_id="alpha", status="SUCCESS"
    )

    items = [item for page in pages for item in page["items"]]
    assert {(item["workflow_id"], item["status"]) for item in items} == {("alpha", "SUCCESS")}
    expected = [
        s.workflow_exec_id
        for s in compozy_store.workflows.list_states()
        if s.workflow_id == "alpha" and s.status is Status.SUCCESS
    ]
    assert [item["workflow_exec_id"] for item in items] == expected
    assert len(expected) == 10


def test_executions_started_while_paging_never_repeat_a_row(
    client: TestClient, member: Any, workflow_factory: Any
) -> None:
    old = [workflow_factory.create(created_at=T0 + timedelta(seconds=i)) for i in range(10)]
    first = client.get(WORKFLOWS, params={"limit": 4}, headers=member.headers).json()
    for _ in range(5):  # created now, so newer than all: before the cursor's position
        workflow_factory.create()

    seen = [item["workflow_exec_id"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = client.get(
            WORKFLOWS, params={"limit": 4, "cursor": cursor}, headers=member.headers
        ).json()
        seen.extend(item["workflow_exec_id"] for item in page["items"])
        cursor = page["next_cursor"]

    assert seen == [s.workflow_exec_id for s in reversed(old)]
    assert len(_exec_ids(_pages(client, WORKFLOWS, member.headers, limit=4))) == 15


def test_items_carry_counts_worker_and_cancellation(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any, compozy_store: Store
) -> None:
    claimed = workflow_factory.create(status=Status.PENDING, created_at=T0)
    idle = workflow_factory.create(created_at=T0 + timedelta(seconds=1))
    task_factory.create(workflow=idle, status=Status.SUCCESS)
    task_factory.create(workflow=idle, status=Status.WAITING)
    [claim] = compozy_store.queue.claim("worker-7", limit=1, lease=30)
    assert claim.workflow_exec_id == claimed.workflow_exec_id

    items = client.get(WORKFLOWS, headers=member.headers).json()["items"]

    assert [item["workflow_exec_id"] for item in items] == [
        idle.workflow_exec_id,
        claimed.workflow_exec_id,
    ]
    first, second = items
    assert "tasks" not in first
    assert (first["task_count"], first["task_status_counts"]) == (2, {"SUCCESS": 1, "WAITING": 1})
    assert (first["worker_id"], first["claim_count"], first["cancel_requested"]) == (None, 0, False)
    assert (second["task_count"], second["task_status_counts"]) == (0, {})
    assert second["status"] == "RUNNING"
    assert (second["worker_id"], second["claim_count"]) == ("worker-7", 1)
    assert second["cancel_requested"] is False


def test_the_detail_carries_the_same_fields_as_the_list_item(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any, compozy_store: Store
) -> None:
    state = workflow_factory.create(status=Status.PENDING)
    task_factory.tree(depth=1, fan_out=2, workflow=state)
    compozy_store.queue.claim("worker-1", limit=1, lease=30)

    [item] = client.get(WORKFLOWS, headers=member.headers).json()["items"]
    detail = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers).json()

    assert {key: detail[key] for key in item} == item
    assert detail["worker_id"] == "worker-1"
    assert detail["task_count"] == 3
    assert len(detail["tasks"][0]["children"]) == 2


@contextmanager
def _statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements run on ``store`` meanwhile."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    engine = store._db.engine  # counts the statements of this store (a check, not a use)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_a_page_costs_the_same_statements_however_many_tasks_it_counts(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any, compozy_store: Store
) -> None:
    def page_statements(limit: int) -> list[str]:
        with _statements(compozy_store) as seen:
            response = client.get(WORKFLOWS, params={"limit": limit}, headers=member.headers)
        assert response.status_code == 200
        return seen

    for i in range(12):
        state = workflow_factory.create(created_at=T0 + timedelta(seconds=i))
        for _ in range(3):
            task_factory.create(workflow=state)
    client.get(WORKFLOWS, headers=member.headers)  # the key is verified and cached first

    small, large = page_statements(1), page_statements(12)

    assert len(large) == len(small)
    # The tasks are counted in SQL, not loaded: one aggregate statement reads task_states.
    assert len([s for s in large if "task_states" in s]) == 1
    assert any("count(" in s.lower() for s in large if "task_states" in s)


# --- limits and cursors ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [WORKFLOWS, USERS, USERS + "/{user}/api-keys"])
@pytest.mark.parametrize("limit", ["0", "-1", "501", "1.5", "ten", ""])
def test_a_limit_out_of_range_is_422(client: TestClient, admin: Any, path: str, limit: str) -> None:
    url = path.format(user=admin.user.id)
    response = client.get(url, params={"limit": limit}, headers=admin.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "RequestValidationError"
    assert error["message"].startswith("query.limit: ")


@pytest.mark.parametrize("limit", [1, 500])
def test_the_limit_bounds_themselves_are_accepted(
    client: TestClient, member: Any, workflow_factory: Any, limit: int
) -> None:
    for i in range(3):
        workflow_factory.create(created_at=T0 + timedelta(seconds=i))
    response = client.get(WORKFLOWS, params={"limit": limit}, headers=member.headers)
    assert response.status_code == 200
    assert len(response.json()["items"]) == min(limit, 3)


def _forged(*parts: Any) -> str:
    raw = json.dumps(list(parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "not a cursor",  # outside the base64url alphabet
    "%00",
    "abc",  # the alphabet, but not base64 of anything
    "x" * 9000,  # longer than any cursor the store makes
    _forged("yesterday", "some-id"),
    _forged("2024-05-01T12:00:00", "some-id"),  # no timezone
    _forged("2024-05-01T12:00:00+00:00", ""),
    _forged("2024-05-01T12:00:00+00:00", 5),
    _forged("2024-05-01T12:00:00+00:00"),
    base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
]


@pytest.mark.parametrize("path", [WORKFLOWS, USERS, USERS + "/{user}/api-keys"])
@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_cursor_the_server_did_not_give_is_422_naming_cursor(
    client: TestClient, admin: Any, path: str, cursor: str
) -> None:
    url = path.format(user=admin.user.id)
    response = client.get(url, params={"cursor": cursor}, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert "cursor" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", [WORKFLOWS, USERS, USERS + "/{user}/api-keys"])
def test_unknown_query_parameters_are_422(client: TestClient, admin: Any, path: str) -> None:
    url = path.format(user=admin.user.id)
    response = client.get(url, params={"page": "2"}, headers=admin.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("query.page: ")


def test_an_empty_cursor_is_422(client: TestClient, member: Any) -> None:
    response = client.get(WORKFLOWS, params={"cursor": ""}, headers=member.headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("query.cursor: ")


# --- users and API keys ------------------------------------------------------------------------


def test_users_in_pages_are_each_read_once_in_order(
    client: TestClient, admin: Any, user_factory: Any, compozy_store: Store
) -> None:
    for _ in range(7):
        user_factory.create()

    pages = _pages(client, USERS, admin.headers, limit=3)

    assert [len(page["items"]) for page in pages] == [3, 3, 2]
    ids = [user["id"] for page in pages for user in page["items"]]
    assert ids == [u.id for u in compozy_store.auth.list_users()]
    assert len(set(ids)) == 8  # the admin and the seven
    for page in pages:
        for user in page["items"]:
            assert set(user) == {"id", "email", "role", "created_at"}


def test_api_keys_in_pages_are_each_read_once_in_order(
    client: TestClient, admin: Any, member: Any, api_key_factory: Any, compozy_store: Store
) -> None:
    for _ in range(4):
        api_key_factory.create(user=member.user)
    api_key_factory.create(user=admin.user)  # another user's key: never listed here

    pages = _pages(client, f"{USERS}/{member.user.id}/api-keys", admin.headers, limit=2)

    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    ids = [key["id"] for page in pages for key in page["items"]]
    assert ids == [k.id for k in compozy_store.auth.list_api_keys_by_user_id(member.user.id)]
    for page in pages:
        for key in page["items"]:
            assert set(key) == {"id", "user_id", "prefix", "created_at", "last_used"}
            assert key["user_id"] == member.user.id


def test_keys_of_an_unknown_user_are_404_even_with_a_cursor(
    client: TestClient, admin: Any, member: Any, api_key_factory: Any
) -> None:
    for _ in range(2):
        api_key_factory.create(user=member.user)
    first = client.get(
        f"{USERS}/{member.user.id}/api-keys", params={"limit": 1}, headers=admin.headers
    ).json()
    assert first["next_cursor"] is not None

    response = client.get(
        f"{USERS}/nobody/api-keys",
        params={"limit": 1, "cursor": first["next_cursor"]},
        headers=admin.headers,
    )

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "UserNotFound"


def test_paging_users_needs_an_admin(client: TestClient, member: Any) -> None:
    response = client.get(USERS, params={"limit": 1}, headers=member.headers)
    assert response.status_code == 403
    assert client.get(USERS, params={"limit": 1}).status_code == 401
