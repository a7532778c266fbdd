"""Claims, leases and cancel requests for workers; indexes for keyset paging.

Revision ID: 0003
Revises: 0002
"""

from compozy.store.migrations.sqlfile import run_section

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_section(revision, "up")


def downgrade() -> None:
    run_section(revision, "down")
