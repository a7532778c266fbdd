"""Workflow and task execution state.

Revision ID: 0001
Revises:
"""

from compozy.store.migrations.sqlfile import run_section

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_section(revision, "up")


def downgrade() -> None:
    run_section(revision, "down")
