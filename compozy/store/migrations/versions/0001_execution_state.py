"""Workflow and task execution state.

Revision ID: 0001
Revises:
"""

from compozy.store.migrations.sqlfile import sql_revision

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision(revision)
