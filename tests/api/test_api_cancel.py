"""POST /api/v0/executions/workflows/{exec_id}/cancel.

No engine runs here (the app's engine is a double that stores nothing), so a PENDING execution
stays PENDING until it is canceled, and a RUNNING one is set up by claiming it through the
store's queue, as a worker would.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.core import Status
from compozy.store import Store
from compozy.task import TaskFilter
from compozy.workflow import WorkflowState

WORKFLOWS = "/api/v0/executions/workflows"


def _cancel(client: TestClient, caller: Any, exec_id: str) -> Any:
    return client.post(f"{WORKFLOWS}/{exec_id}/cancel", headers=caller.headers)


def _pending(store: Store) -> WorkflowState:
    return store.workflows.upsert_state(
        WorkflowState(workflow_id="hello", status=Status.PENDING, input={"name": "Ada"})
    )


def test_a_pending_execution_is_canceled_at_once(
    client: TestClient, member: Any, compozy_store: Store, task_factory: Any
) -> None:
    state = _pending(compozy_store)
    waiting = task_factory.create(workflow=state, status=Status.PENDING)
    done = task_factory.create(workflow=state, status=Status.SUCCESS)
    before = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers).json()
    assert before["status"] == "PENDING"  # nothing runs it
    assert before["cancel_requested"] is False

    response = _cancel(client, member, state.workflow_exec_id)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["workflow_exec_id"] == state.workflow_exec_id
    assert body["status"] == "CANCELED"
    assert body["cancel_requested"] is True
    assert body["worker_id"] is None
    assert body["error"]["code"] == "CANCELED"
    assert body["task_status_counts"] == {"CANCELED": 1, "SUCCESS": 1}
    assert "tasks" not in body
    stored = compozy_store.workflows.get_state(state.workflow_exec_id)
    assert stored.status is Status.CANCELED
    assert compozy_store.tasks.get_state(waiting.task_exec_id).status is Status.CANCELED
    assert compozy_store.tasks.get_state(done.task_exec_id).status is Status.SUCCESS
    after = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers).json()
    assert {key: after[key] for key in body} == body


def test_a_running_execution_is_marked_for_its_worker(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    state = _pending(compozy_store)
    claims = compozy_store.queue.claim("w1", limit=1, lease=30)
    assert [c.workflow_exec_id for c in claims] == [state.workflow_exec_id]

    response = _cancel(client, member, state.workflow_exec_id)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "RUNNING"
    assert body["cancel_requested"] is True
    assert (body["worker_id"], body["claim_count"]) == ("w1", 1)
    renewal = compozy_store.queue.renew(claims, lease=30)
    assert renewal.cancel_requested == {state.workflow_exec_id}
    assert renewal.lost == frozenset()
    [item] = client.get(WORKFLOWS, headers=member.headers).json()["items"]
    assert (item["status"], item["cancel_requested"]) == ("RUNNING", True)


def test_canceling_a_running_execution_twice_is_still_202(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    state = _pending(compozy_store)
    compozy_store.queue.claim("w1", limit=1, lease=30)

    first = _cancel(client, member, state.workflow_exec_id)
    second = _cancel(client, member, state.workflow_exec_id)

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json() == second.json() | {"updated_at": first.json()["updated_at"]}
    assert second.json()["status"] == "RUNNING"


@pytest.mark.parametrize("status", [Status.SUCCESS, Status.FAILED, Status.TIMED_OUT])
def test_a_finished_execution_is_409_and_unchanged(
    client: TestClient, member: Any, workflow_factory: Any, compozy_store: Store, status: Status
) -> None:
    state = workflow_factory.create(status=status, output={"kept": True})

    response = _cancel(client, member, state.workflow_exec_id)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "ExecutionFinished"
    assert state.workflow_exec_id in error["message"]
    assert status.value in error["message"]
    stored = compozy_store.workflows.get_state(state.workflow_exec_id)
    assert (stored.status, stored.output, stored.updated_at) == (
        status,
        {"kept": True},
        state.updated_at,
    )
    detail = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers).json()
    assert detail["cancel_requested"] is False


def test_canceling_a_canceled_execution_again_is_409(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    state = _pending(compozy_store)
    assert _cancel(client, member, state.workflow_exec_id).status_code == 202

    again = _cancel(client, member, state.workflow_exec_id)

    assert again.status_code == 409
    assert again.json()["error"]["code"] == "ExecutionFinished"
    assert "CANCELED" in again.json()["error"]["message"]


def test_an_unknown_execution_is_404(client: TestClient, member: Any) -> None:
    response = _cancel(client, member, "no-such-exec")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "WorkflowNotFound"
    assert "no-such-exec" in response.json()["error"]["message"]


@pytest.mark.parametrize("exec_id", ["e" * 256, "%00"])
def test_a_bad_id_is_422(client: TestClient, member: Any, exec_id: str) -> None:
    response = _cancel(client, member, exec_id)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("path.exec_id: ")


def test_canceling_needs_a_key_and_changes_nothing_without_one(
    client: TestClient, compozy_store: Store
) -> None:
    state = _pending(compozy_store)

    anonymous = client.post(f"{WORKFLOWS}/{state.workflow_exec_id}/cancel")
    forged = client.post(
        f"{WORKFLOWS}/{state.workflow_exec_id}/cancel",
        headers={"Authorization": "Bearer cpzy_unknown_key"},
    )

    for response in (anonymous, forged):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "Unauthorized"
    assert compozy_store.workflows.get_state(state.workflow_exec_id).status is Status.PENDING


def test_any_valid_key_may_cancel(
    client: TestClient, admin: Any, member: Any, compozy_store: Store
) -> None:
    first, second = _pending(compozy_store), _pending(compozy_store)
    assert _cancel(client, member, first.workflow_exec_id).status_code == 202
    assert _cancel(client, admin, second.workflow_exec_id).status_code == 202


def test_cancel_only_accepts_post(client: TestClient, member: Any, compozy_store: Store) -> None:
    state = _pending(compozy_store)
    response = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}/cancel", headers=member.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_canceling_one_execution_leaves_the_others_alone(
    client: TestClient, member: Any, compozy_store: Store, task_factory: Any
) -> None:
    target, other = _pending(compozy_store), _pending(compozy_store)
    task_factory.create(workflow=other, status=Status.PENDING)

    assert _cancel(client, member, target.workflow_exec_id).status_code == 202

    assert compozy_store.workflows.get_state(other.workflow_exec_id).status is Status.PENDING
    [task] = compozy_store.tasks.list_states(TaskFilter(workflow_exec_id=other.workflow_exec_id))
    assert task.status is Status.PENDING


def test_the_openapi_document_describes_cancel(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operation = document["paths"][WORKFLOWS + "/{exec_id}/cancel"]["post"]
    assert set(operation["responses"]) == {"202", "401", "404", "409", "422", "503"}
    schema = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/WorkflowExecutionSummary"}
    summary = document["components"]["schemas"]["WorkflowExecutionSummary"]
    assert {"worker_id", "claim_count", "cancel_requested"} <= set(summary["required"])
