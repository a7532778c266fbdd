"""The schema, once, for both drivers.

The migrations' SQL files create exactly this (a test compares them); queries are built from
these Table objects. Every constraint and index is named here so that both databases carry the
same names and error translation can recognise a constraint by name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from compozy.store.types import Identifier, JSONValue, UTCDateTime

metadata = sa.MetaData()


def _execution_columns() -> list[sa.Column[Any]]:
    """What a workflow's and a task's state both carry: the JSON payload and the timestamps."""
    return [
        sa.Column("usage", JSONValue(), nullable=True),
        sa.Column("input", JSONValue(), nullable=True),
        sa.Column("output", JSONValue(), nullable=True),
        sa.Column("error", JSONValue(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


workflow_states = sa.Table(
    "workflow_states",
    metadata,
    sa.Column("workflow_exec_id", Identifier(), nullable=False),
    sa.Column("workflow_id", Identifier(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    *_execution_columns(),
    # Who runs the execution and until when; claim_count fences each write of a worker.
    sa.Column("worker_id", Identifier(), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
    sa.Column("claim_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("cancel_requested_at", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("workflow_exec_id", name="pk_workflow_states"),
    sa.Index("ix_workflow_states_workflow_id_created_at", "workflow_id", "created_at"),
    sa.Index("ix_workflow_states_status", "status"),
    sa.Index("ix_workflow_states_created_at", "created_at", "workflow_exec_id"),
    sa.Index("ix_workflow_states_claimable", "status", "created_at"),
    sa.Index("ix_workflow_states_worker_id", "worker_id"),
)

task_states = sa.Table(
    "task_states",
    metadata,
    sa.Column("task_exec_id", Identifier(), nullable=False),
    sa.Column("task_id", Identifier(), nullable=False),
    sa.Column("workflow_id", Identifier(), nullable=False),
    sa.Column("workflow_exec_id", Identifier(), nullable=False),
    sa.Column("parent_state_id", Identifier(), nullable=True),
    sa.Column("component", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("execution_type", sa.Text(), nullable=False),
    sa.Column("agent_id", Identifier(), nullable=True),
    sa.Column("action_id", Identifier(), nullable=True),
    sa.Column("tool_id", Identifier(), nullable=True),
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
    sa.Index("ix_task_states_workflow_exec_id_created_at", "workflow_exec_id", "created_at"),
    sa.Index("ix_task_states_parent_state_id_created_at", "parent_state_id", "created_at"),
    sa.Index("ix_task_states_workflow_exec_id_task_id", "workflow_exec_id", "task_id"),
    sa.Index("ix_task_states_status", "status"),
    sa.Index("ix_task_states_agent_id", "agent_id"),
    sa.Index("ix_task_states_tool_id", "tool_id"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Identifier(), nullable=False),
    sa.Column("email", sa.Text(), nullable=False),
    sa.Column("email_key", sa.Text(), nullable=False),
    sa.Column("role", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("id", name="pk_users"),
    sa.UniqueConstraint("email_key", name="uq_users_email_key"),
    sa.Index("ix_users_role", "role"),
    sa.Index("ix_users_created_at", "created_at", "id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", Identifier(), nullable=False),
    sa.Column("user_id", Identifier(), nullable=False),
    sa.Column("prefix", sa.Text(), nullable=False),
    sa.Column("hash", sa.LargeBinary(), nullable=False),
    sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used", UTCDateTime(), nullable=True),
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
