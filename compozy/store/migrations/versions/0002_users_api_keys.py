"""Users and API keys.

Revision ID: 0002
Revises: 0001
"""

from compozy.store.migrations.sqlfile import run_section

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_section(revision, "up")


def downgrade() -> None:
    run_section(revision, "down")
