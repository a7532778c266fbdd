"""Indexes in the order the hot reads ask for rows (lists and pages without a sort).

Revision ID: 0004
Revises: 0003
"""

from compozy.store.migrations.sqlfile import sql_revision

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision(revision)
