"""Users and API keys.

Revision ID: 0002
Revises: 0001
"""

from compozy.store.migrations.sqlfile import sql_revision

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision(revision)
