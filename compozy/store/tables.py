"""The schema, once, for both drivers.

The migrations' SQL files create exactly this (a test compares them); queries are built from
these Table objects. Every constraint and index is named here so that both databases carry the
same names and error translation can recognise a constraint by name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from compozy.store.types import Identifier, JSONValue, UTCDateTime

metadata = sa.MetaData()


def _not_null(type_: type[TypeEngine[Any]], *names: str) -> list[sa.Column[Any]]:
    """A NOT NULL column of ``type_`` for each of ``names``, in that order."""
    return [sa.Column(name, type_(), nullable=False) for name in names]


def _nullable(type_: type[TypeEngine[Any]], *names: str) -> list[sa.Column[Any]]:
    """A column of ``type_`` that may be NULL for each of ``names``, in that order."""
    return [sa.Column(name, type_(), nullable=True) for name in names]


def _execution_columns() -> list[sa.Column[Any]]:
    """What a workflow's and a task's state both carry: the JSON payload and the timestamps."""
    return [
        *_nullable(JSONValue, "usage", "input", "output", "error"),
        *_not_null(UTCDateTime, "created_at", "updated_at"),
    ]


workflow_states = sa.Table(
    "workflow_states",
    metadata,
    *_not_null(Identifier, "workflow_exec_id", "workflow_id"),
    *_not_null(sa.Text, "status"),
    *_execution_columns(),
    # Who runs the execution and until when; claim_count fences each write of a worker.
    *_nullable(Identifier, "worker_id"),
    *_nullable(UTCDateTime, "lease_expires_at"),
    sa.Column("claim_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    *_nullable(UTCDateTime, "cancel_requested_at"),
    sa.PrimaryKeyConstraint("workflow_exec_id", name="pk_workflow_states"),
    # The list's filters (none, status, workflow_id, both), each followed by the page order
    # (created_at, workflow_exec_id): a page and a keyset cursor are a range of one index, with
    # no sort, whatever the table holds. Claims read PENDING executions oldest first by status.
    sa.Index("ix_workflow_states_created_at", "created_at", "workflow_exec_id"),
    sa.Index("ix_workflow_states_claimable", "status", "created_at", "workflow_exec_id"),
    sa.Index(
        "ix_workflow_states_workflow_id_created_at", "workflow_id", "created_at", "workflow_exec_id"
    ),
    sa.Index(
        "ix_workflow_states_workflow_id_status_created_at",
        "workflow_id",
        "status",
        "created_at",
        "workflow_exec_id",
    ),
    sa.Index("ix_workflow_states_worker_id", "worker_id"),
)

task_states = sa.Table(
    "task_states",
    metadata,
    *_not_null(Identifier, "task_exec_id", "task_id", "workflow_id", "workflow_exec_id"),
    *_nullable(Identifier, "parent_state_id"),
    *_not_null(sa.Text, "component", "status", "execution_type"),
    *_nullable(Identifier, "agent_id", "action_id", "tool_id"),
    *_execution_columns(),
    sa.PrimaryKeyConstraint("task_exec_id", name="pk_task_states"),
    sa.ForeignKeyConstraint(
        ["workflow_exec_id"],
        ["workflow_states.workflow_exec_id"],
        name="fk_task_states_workflow_exec_id",
        ondelete="CASCADE",
    ),
    sa.ForeignKeyConstraint(
        ["parent_state_id"],
        ["task_states.task_exec_id"],
        name="fk_task_states_parent_state_id",
        ondelete="CASCADE",
    ),
    # An execution's tasks and a parent's children in task order (created_at, task_exec_id).
    sa.Index(
        "ix_task_states_workflow_exec_id_created_at",
        "workflow_exec_id",
        "created_at",
        "task_exec_id",
    ),
    sa.Index(
        "ix_task_states_parent_state_id_created_at", "parent_state_id", "created_at", "task_exec_id"
    ),
    sa.Index("ix_task_states_workflow_exec_id_task_id", "workflow_exec_id", "task_id"),
    sa.Index("ix_task_states_status", "status"),
    sa.Index("ix_task_states_agent_id", "agent_id"),
    sa.Index("ix_task_states_tool_id", "tool_id"),
)

users = sa.Table(
    "users",
    metadata,
    *_not_null(Identifier, "id"),
    *_not_null(sa.Text, "email", "email_key", "role"),
    *_not_null(UTCDateTime, "created_at"),
    sa.PrimaryKeyConstraint("id", name="pk_users"),
    sa.UniqueConstraint("email_key", name="uq_users_email_key"),
    sa.Index("ix_users_role", "role"),
    sa.Index("ix_users_created_at", "created_at", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    *_not_null(Identifier, "id", "user_id"),
    *_not_null(sa.Text, "prefix"),
    *_not_null(sa.LargeBinary, "hash", "fingerprint"),
    *_not_null(UTCDateTime, "created_at"),
    *_nullable(UTCDateTime, "last_used"),
    sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    sa.ForeignKeyConstraint(
        ["user_id"], ["users.id"], name="fk_api_keys_user_id", ondelete="CASCADE"
    ),
    sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    sa.UniqueConstraint("fingerprint", name="uq_api_keys_fingerprint"),
    sa.Index("ix_api_keys_user_id", "user_id"),
    sa.Index("ix_api_keys_user_id_created_at", "user_id", "created_at", "id"),
)

TABLES = (workflow_states, task_states, users, api_keys)
"""In dependency order: a table only references tables before it (delete in reverse)."""

CHECK_CONSTRAINTS = {
    "workflow_states": (
        "ck_workflow_states_status",
        "ck_workflow_states_usage",
        "ck_workflow_states_input",
        "ck_workflow_states_output",
        "ck_workflow_states_error",
        "ck_workflow_states_claim_count",
    ),
    "task_states": (
        "ck_task_states_status",
        "ck_task_states_component",
        "ck_task_states_execution_type",
        "ck_task_states_shape",
        "ck_task_states_usage",
        "ck_task_states_input",
        "ck_task_states_output",
        "ck_task_states_error",
    ),
    "users": ("ck_users_role",),
    "api_keys": (),
}
"""CHECK constraints live only in the SQL files (autogenerate cannot compare them); the
migration tests assert that both databases carry exactly these names."""
