"""The move issue 9 asks for, at size: a SQLite file to PostgreSQL and back to a SQLite file,
10,000 executions with task trees three levels deep, usage, unicode, users and API keys."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key, verify_api_key
from compozy.core import Component, ExecutionType, Status
from compozy.store import Store, migrations
from compozy.task import TaskState
from compozy.transfer import TransferSummary, export_data, import_data
from compozy.usage import UsageEntry, UsageSummary
from compozy.workflow import WorkflowState
from compozy_testkit.contract._build import at
from compozy_testkit.databases import TestDatabase

EXECUTIONS = 10_000
STATUSES = [Status.SUCCESS, Status.FAILED, Status.RUNNING, Status.PENDING, Status.CANCELED]


def _project(store: Store) -> str:
    admin = store.auth.create_user(User(email="Ädmin@example.com", role=Role.ADMIN))
    key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    store.auth.create_api_key(key)
    store.auth.update_api_key_last_used(key.id)
    for n in range(20):
        user = store.auth.create_user(User(email=f"user{n}@例え.jp"))
        store.auth.create_api_key(new_api_key(user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)[0])
    usage = UsageSummary(entries=[UsageEntry(provider="p", model="m", prompt_tokens=7)])
    with store.transaction():
        for n in range(EXECUTIONS):
            wf = store.workflows.upsert_state(
                WorkflowState(
                    workflow_id=f"wf-{n % 7}",
                    status=STATUSES[n % len(STATUSES)],
                    input={"n": n, "text": f"ünïcødé {n} 🚀", "ratio": n / 7},
                    usage=usage if n % 2 else None,
                    created_at=at(n),
                    updated_at=at(n + 0.25),
                )
            )
            parent: TaskState | None = None
            for depth, kind in enumerate(
                (ExecutionType.COMPOSITE, ExecutionType.PARALLEL, ExecutionType.BASIC)
            ):
                parent = store.tasks.upsert_state(
                    TaskState(
                        task_id=f"t{depth}",
                        workflow_id=wf.workflow_id,
                        workflow_exec_id=wf.workflow_exec_id,
                        parent_state_id=parent.task_exec_id if parent else None,
                        component=Component.TASK,
                        status=STATUSES[(n + depth) % len(STATUSES)],
                        execution_type=kind,
                        usage=usage if depth == 2 else None,
                        output={"depth": depth, "n": n},
                        created_at=at(n + depth / 10),
                    )
                )
    return plaintext


def _reads(store: Store) -> dict[str, Any]:
    return {
        "executions": store.workflows.list_states(),
        "users": store.auth.list_users(),
        "keys": [store.auth.list_api_keys_by_user_id(u.id) for u in store.auth.list_users()],
    }


def _move(source: Store, target: Store) -> TransferSummary:
    out = io.BytesIO()
    exported = export_data(source, out)
    out.seek(0)
    imported = import_data(target, out)
    assert imported.tables == exported.tables
    return exported


@pytest.mark.compozy_backends("postgres", reason="the move goes through PostgreSQL")
def test_sqlite_file_to_postgres_and_back_keeps_every_read_key_and_checksum(
    compozy_empty_database: TestDatabase,
    compozy_empty_database_on: Callable[[str], TestDatabase],
) -> None:
    source = compozy_empty_database_on("sqlite-file").open()
    migrations.upgrade(source)
    plaintext = _project(source)
    postgres = compozy_empty_database.open()
    back = compozy_empty_database_on("sqlite-file").open()

    first = _move(source, postgres)
    second = _move(postgres, back)

    assert first.tables["workflow_states"].rows == EXECUTIONS
    assert first.tables["task_states"].rows == 3 * EXECUTIONS
    assert second.tables == first.tables
    expected = _reads(source)
    assert _reads(postgres) == expected
    assert _reads(back) == expected
    for store in (postgres, back):
        (admin,) = [u for u in store.auth.list_users() if u.role is Role.ADMIN]
        (key,) = store.auth.list_api_keys_by_user_id(admin.id)
        assert verify_api_key(plaintext, key)
        assert key.last_used is not None
