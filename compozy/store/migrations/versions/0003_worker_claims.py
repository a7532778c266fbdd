"""Claims, leases and cancel requests for workers; indexes for keyset paging.

Revision ID: 0003
Revises: 0002
"""

from compozy.store.migrations.sqlfile import sql_revision

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

upgrade, downgrade = sql_revision(revision)
