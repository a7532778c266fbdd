"""Export and import between every pair of backends (``compozy.transfer``).

A project is built on the test's backend, exported, imported into an empty database on each
backend in turn, and read back through the repositories: every read gives the same values,
an API key made before the move still verifies, and exporting the copy gives the same rows
and checksums. A check of compozy's own store: it takes ``compozy_database``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from compozy.auth import Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, new_api_key, verify_api_key
from compozy.core import Component, ExecutionType, Status
from compozy.errors import ValidationError
from compozy.store import Store
from compozy.transfer import TransferSummary, export_data, import_data
from compozy.usage import UsageEntry, UsageSummary
from compozy_testkit.contract._build import at, task, workflow
from compozy_testkit.databases import TestDatabase
from compozy_testkit.session import BACKENDS

__all__ = ["TransferContract", "build_project", "project_reads"]

_ODD_JSON: dict[str, Any] = {
    "unicode": "zażółć gęślą jaźń — 東京 🚀",
    "floats": [0.1, 1.5e300, -2.0, 1e-7, 12345678901234567890],
    "nested": {"a": [{"b": None, "c": True}], "": "empty key"},
}


def build_project(store: Store, *, executions: int = 3) -> str:
    """Store users, API keys and ``executions`` workflow executions whose tasks form trees
    three levels deep, with usage, unicode and odd numbers; return an API key's plaintext."""
    admin = store.auth.create_user(User(email="Admin@Example.com", role=Role.ADMIN))
    store.auth.create_user(User(email="ünïcode@example.com", role=Role.USER))
    key, plaintext = new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    store.auth.create_api_key(key)
    store.auth.update_api_key_last_used(key.id)
    store.auth.create_api_key(new_api_key(admin.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)[0])
    usage = UsageSummary(
        entries=[
            UsageEntry(provider="openai", model="gpt-4o", prompt_tokens=3, completion_tokens=4)
        ]
    )
    with store.transaction():
        for n in range(executions):
            wf = workflow(
                store,
                workflow_id=f"wf-{n % 2}",
                status=Status.SUCCESS if n % 3 else Status.PENDING,
                input={"n": n, **_ODD_JSON},
                usage=usage,
                created_at=at(n),
                updated_at=at(n + 0.5),
            )
            top = task(
                store,
                wf,
                "fan",
                Status.SUCCESS,
                execution_type=ExecutionType.PARALLEL,
                output={"n": n},
                created_at=at(n),
            )
            middle = task(store, wf, "mid", Status.FAILED, parent=top, error={"message": "ë"})
            task(
                store,
                wf,
                "leaf",
                Status.RUNNING,
                parent=middle,
                component=Component.AGENT,
                agent_id="agent",
                action_id="act",
                usage=usage,
                input=_ODD_JSON,
            )
    claimed = store.queue.claim("worker-1", limit=1, lease=60.0)
    assert claimed, "the project has a PENDING execution to claim"
    return plaintext


def project_reads(store: Store) -> dict[str, Any]:
    """Everything the repositories read back of a project, for comparison."""
    tasks = store.tasks.list_states()
    users = store.auth.list_users()
    return {
        "executions": store.workflows.list_states(),
        "tasks": tasks,
        "trees": [
            store.tasks.get_task_tree(t.task_exec_id) for t in tasks if t.parent_state_id is None
        ],
        "usage": [store.tasks.get_usage_summary(t.task_exec_id) for t in tasks],
        "users": users,
        "keys": [store.auth.list_api_keys_by_user_id(u.id) for u in users],
    }


def _export(store: Store) -> tuple[TransferSummary, list[str]]:
    out = io.BytesIO()
    summary = export_data(store, out)
    return summary, out.getvalue().decode("utf-8").splitlines()


def _exported(database: TestDatabase, executions: int) -> tuple[Store, TransferSummary, list[str]]:
    """The test's store holding a project of ``executions``, and its export."""
    source = database.store()
    build_project(source, executions=executions)
    return (source, *_export(source))


def _import(store: Store, lines: list[str], **options: Any) -> TransferSummary:
    return import_data(store, io.BytesIO(("\n".join(lines) + "\n").encode("utf-8")), **options)


class TransferContract:
    """``compozy export`` then ``compozy import``, from this backend to each backend."""

    @pytest.fixture(params=BACKENDS, ids=[f"to-{b}" for b in BACKENDS])
    def target(
        self,
        request: pytest.FixtureRequest,
        compozy_empty_database_on: Callable[[str], TestDatabase],
    ) -> Store:
        return compozy_empty_database_on(request.param).open()

    def test_a_project_survives_the_move_and_exports_again_the_same(
        self, compozy_database: TestDatabase, target: Store
    ) -> None:
        source = compozy_database.store()
        plaintext = build_project(source)
        summary, lines = _export(source)
        imported = _import(target, lines)

        assert imported.tables == summary.tables
        assert project_reads(target) == project_reads(source)
        (admin,) = [u for u in target.auth.list_users() if u.role.value == "admin"]
        keys = target.auth.list_api_keys_by_user_id(admin.id)
        assert any(verify_api_key(plaintext, key) for key in keys)
        again, again_lines = _export(target)
        assert again.tables == summary.tables
        assert again_lines[1:] == lines[1:]  # every row and the trailer, byte for byte

    def test_the_header_and_trailer_describe_the_rows(
        self, compozy_database: TestDatabase, target: Store
    ) -> None:
        source, summary, lines = _exported(compozy_database, 2)
        header, trailer = json.loads(lines[0]), json.loads(lines[-1])["trailer"]
        assert header["driver"] == source.driver
        assert {t["name"]: t["rows"] for t in header["tables"]} == {
            name: t.rows for name, t in summary.tables.items()
        }
        rows_in_trailer = {name: t["rows"] for name, t in trailer.items()}
        assert rows_in_trailer == {
            "users": 2,
            "api_keys": 2,
            "workflow_states": 2,
            "task_states": 6,
        }
        rows = [json.loads(line) for line in lines[1:-1]]
        tables = [r["table"] for r in rows]
        assert tables == sorted(
            tables, key=["users", "api_keys", "workflow_states", "task_states"].index
        )
        seen: set[str] = set()
        for row in (r["row"] for r in rows if r["table"] == "task_states"):
            assert row["parent_state_id"] is None or row["parent_state_id"] in seen
            seen.add(row["task_exec_id"])
        _import(target, lines)

    def test_a_target_with_rows_is_refused_unless_replace(
        self, compozy_database: TestDatabase, target: Store
    ) -> None:
        source, _, lines = _exported(compozy_database, 1)
        _import(target, lines)
        target.workflows.update_status(
            target.workflows.list_states()[0].workflow_exec_id, Status.FAILED
        )
        changed = project_reads(target)
        with pytest.raises(ValidationError, match=r"already holds rows .*--replace"):
            _import(target, lines)
        assert project_reads(target) == changed
        _import(target, lines, replace=True)
        assert project_reads(target) == project_reads(source)

    def test_a_dry_run_checks_everything_and_writes_nothing(
        self, compozy_database: TestDatabase, target: Store
    ) -> None:
        _, _, lines = _exported(compozy_database, 1)
        summary = _import(target, lines, dry_run=True)
        assert summary.rows == 1 + 3 + 2 + 2
        assert target.health().revision is None  # not even migrated
        edited = [line.replace('"wf-0"', '"wf-X"') for line in lines]
        with pytest.raises(
            ValidationError, match=r"line \d+ \(trailer, workflow_states\).*checksum"
        ):
            _import(target, edited, dry_run=True)
