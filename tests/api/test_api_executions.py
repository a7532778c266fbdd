"""Reading executions: the workflow list (filters, order), detail with its tree, tasks, progress.

States are stored through the repositories and factories, so nothing here needs an engine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from compozy.core import ExecutionType, Status, format_timestamp
from compozy.store import Store
from compozy.usage import UsageEntry, UsageSummary

WORKFLOWS = "/api/v0/executions/workflows"
TASKS = "/api/v0/executions/tasks"
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def three_executions(workflow_factory: Any) -> list[Any]:
    """Oldest first: alpha RUNNING, beta FAILED, alpha SUCCESS, a minute apart."""
    return [
        workflow_factory.create(workflow_id="alpha", status=Status.RUNNING, created_at=T0),
        workflow_factory.create(
            workflow_id="beta", status=Status.FAILED, created_at=T0 + timedelta(minutes=1)
        ),
        workflow_factory.create(
            workflow_id="alpha", status=Status.SUCCESS, created_at=T0 + timedelta(minutes=2)
        ),
    ]


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["workflow_exec_id"] for item in response.json()["items"]]


def test_list_is_newest_first(client: TestClient, member: Any, three_executions: list[Any]) -> None:
    response = client.get(WORKFLOWS, headers=member.headers)
    assert _ids(response) == [s.workflow_exec_id for s in reversed(three_executions)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "SUCCESS"}, [2]),
        ({"status": "RUNNING"}, [0]),
        ({"status": "CANCELED"}, []),
        ({"workflow_id": "alpha"}, [2, 0]),
        ({"workflow_id": "beta"}, [1]),
        ({"workflow_id": "gamma"}, []),
        ({"workflow_id": "alpha", "status": "RUNNING"}, [0]),
        ({"workflow_id": "beta", "status": "RUNNING"}, []),
    ],
)
def test_list_filters(
    client: TestClient,
    member: Any,
    three_executions: list[Any],
    query: dict[str, str],
    expected: list[int],
) -> None:
    response = client.get(WORKFLOWS, params=query, headers=member.headers)
    assert _ids(response) == [three_executions[i].workflow_exec_id for i in expected]


def test_ties_on_created_at_break_on_exec_id_descending(
    client: TestClient, member: Any, workflow_factory: Any
) -> None:
    same = [workflow_factory.create(created_at=T0) for _ in range(3)]
    response = client.get(WORKFLOWS, headers=member.headers)
    assert _ids(response) == sorted((s.workflow_exec_id for s in same), reverse=True)


def test_list_items_carry_counts_not_the_task_map(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any
) -> None:
    state = workflow_factory.create(
        input={"q": 1},
        usage=UsageSummary(entries=[UsageEntry(provider="openai", model="m", prompt_tokens=3)]),
    )
    task_factory.create(workflow=state, status=Status.SUCCESS)
    task_factory.create(workflow=state, status=Status.SUCCESS)
    task_factory.create(workflow=state, status=Status.FAILED)
    [item] = client.get(WORKFLOWS, headers=member.headers).json()["items"]
    assert "tasks" not in item
    assert item["task_count"] == 3
    assert item["task_status_counts"] == {"FAILED": 1, "SUCCESS": 2}
    assert item["input"] == {"q": 1}
    assert item["status"] == "RUNNING"
    assert item["usage"] == [
        {
            "provider": "openai",
            "model": "m",
            "prompt_tokens": 3,
            "completion_tokens": 0,
            "total_tokens": 3,
            "reasoning_tokens": None,
            "cached_prompt_tokens": None,
            "input_audio_tokens": None,
            "output_audio_tokens": None,
            "agent_ids": [],
            "captured_at": None,
            "updated_at": None,
            "source": "",
        }
    ]


@pytest.mark.parametrize(
    "query",
    [
        {"status": "RUN"},
        {"status": "DONE"},
        {"status": ""},
        {"workflow_id": ""},
        {"workflow_id": "w" * 256},
        {"workflow_id": "a\u0000b"},
        {"stauts": "FAILED"},
    ],
)
def test_bad_list_queries_are_422(client: TestClient, member: Any, query: dict[str, str]) -> None:
    response = client.get(WORKFLOWS, params=query, headers=member.headers)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "RequestValidationError"
    assert error["message"].startswith("query.")


def test_detail_nests_the_task_tree(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any
) -> None:
    state = workflow_factory.create(created_at=T0)
    first = task_factory.tree(depth=2, fan_out=2, workflow=state)  # 1 + 2 + 4
    second = task_factory.tree(depth=0, fan_out=1, workflow=state)
    response = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["workflow_exec_id"] == state.workflow_exec_id
    assert body["created_at"] == "2024-05-01T12:00:00.123456Z"
    assert body["task_count"] == 8

    roots = body["tasks"]
    assert [r["task_exec_id"] for r in roots] == [first[0].task_exec_id, second[0].task_exec_id]
    root = roots[0]
    assert root["parent_state_id"] is None
    assert [c["task_exec_id"] for c in root["children"]] == [t.task_exec_id for t in first[1:3]]
    grandchildren = [g["task_exec_id"] for c in root["children"] for g in c["children"]]
    assert grandchildren == [t.task_exec_id for t in first[3:7]]
    for child in root["children"]:
        assert child["parent_state_id"] == root["task_exec_id"]
        for grandchild in child["children"]:
            assert grandchild["parent_state_id"] == child["task_exec_id"]
            assert grandchild["children"] == []
    assert roots[1]["children"] == []


def test_detail_shows_every_state_of_a_repeated_task_id(
    client: TestClient, member: Any, workflow_factory: Any, task_factory: Any
) -> None:
    # state.tasks keeps the latest row per task_id; the tree must not lose the retries.
    state = workflow_factory.create()
    attempts = [
        task_factory.create(workflow=state, task_id="fetch", created_at=T0 + timedelta(seconds=i))
        for i in range(2)
    ]
    body = client.get(f"{WORKFLOWS}/{state.workflow_exec_id}", headers=member.headers).json()
    assert [t["task_exec_id"] for t in body["tasks"]] == [a.task_exec_id for a in attempts]
    assert body["task_count"] == 1


def test_detail_of_unknown_execution_is_404(client: TestClient, member: Any) -> None:
    response = client.get(f"{WORKFLOWS}/missing-exec", headers=member.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "WorkflowNotFound"
    assert "missing-exec" in response.json()["error"]["message"]


def test_task_detail(
    client: TestClient, member: Any, task_factory: Any, compozy_store: Store
) -> None:
    task = task_factory.create(
        execution_type=ExecutionType.BASIC,
        tool_id="echo",
        status=Status.FAILED,
        output={"x": [1, 2.5, None, True]},
        error={"message": "boom", "code": "TOOL_FAILED"},
    )
    response = client.get(f"{TASKS}/{task.task_exec_id}", headers=member.headers)
    assert response.status_code == 200
    body = response.json()
    stored = compozy_store.tasks.get_state(task.task_exec_id)
    assert body == {
        "task_exec_id": stored.task_exec_id,
        "task_id": stored.task_id,
        "workflow_id": stored.workflow_id,
        "workflow_exec_id": stored.workflow_exec_id,
        "parent_state_id": None,
        "component": "task",
        "status": "FAILED",
        "execution_type": "basic",
        "agent_id": None,
        "action_id": None,
        "tool_id": "echo",
        "usage": None,
        "input": None,
        "output": {"x": [1, 2.5, None, True]},
        "error": {"message": "boom", "code": "TOOL_FAILED"},
        "created_at": body["created_at"],
        "updated_at": body["updated_at"],
    }
    assert stored.created_at is not None
    assert body["created_at"] == format_timestamp(stored.created_at)


def test_progress_counts_direct_children(
    client: TestClient, member: Any, task_factory: Any
) -> None:
    parent = task_factory.create(execution_type=ExecutionType.PARALLEL)
    for status in (Status.SUCCESS, Status.SUCCESS, Status.FAILED, Status.WAITING, Status.PENDING):
        child = task_factory.create(parent=parent, status=status)
    task_factory.create(parent=child, status=Status.FAILED)  # a grandchild: not counted
    response = client.get(f"{TASKS}/{parent.task_exec_id}/progress", headers=member.headers)
    assert response.status_code == 200
    assert response.json() == {
        "total_children": 5,
        "success_count": 2,
        "failed_count": 1,
        "canceled_count": 0,
        "timed_out_count": 0,
        "pending_count": 1,
        "running_count": 1,
        "terminal_count": 3,
        "status_counts": {"FAILED": 1, "PENDING": 1, "SUCCESS": 2, "WAITING": 1},
        "completion_rate": 0.4,
        "failure_rate": 0.2,
    }


def test_progress_of_a_leaf_is_all_zero(client: TestClient, member: Any, task_factory: Any) -> None:
    leaf = task_factory.create()
    body = client.get(f"{TASKS}/{leaf.task_exec_id}/progress", headers=member.headers).json()
    assert body["total_children"] == 0
    assert body["status_counts"] == {}
    assert body["completion_rate"] == 0.0


@pytest.mark.parametrize("suffix", ["", "/progress"])
def test_unknown_task_is_404(client: TestClient, member: Any, suffix: str) -> None:
    response = client.get(f"{TASKS}/no-such-task{suffix}", headers=member.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TaskNotFound"


@pytest.mark.parametrize(
    "path",
    [
        WORKFLOWS + "/" + "e" * 256,
        WORKFLOWS + "/%00",
        TASKS + "/" + "t" * 256,
        TASKS + "/%00/progress",
    ],
)
def test_bad_ids_in_paths_are_422(client: TestClient, member: Any, path: str) -> None:
    response = client.get(path, headers=member.headers)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "RequestValidationError"
    assert response.json()["error"]["message"].startswith("path.")


def test_ids_with_unusual_characters_round_trip(
    client: TestClient, member: Any, workflow_factory: Any
) -> None:
    # (No "%" in the id: Starlette's TestClient decodes the path twice, a real server once.)
    state = workflow_factory.create(workflow_exec_id="ünï cødé ☃ +&?#")
    encoded = quote(state.workflow_exec_id, safe="")
    response = client.get(f"{WORKFLOWS}/{encoded}", headers=member.headers)
    assert response.status_code == 200
    assert response.json()["workflow_exec_id"] == state.workflow_exec_id
