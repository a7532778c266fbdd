"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from compozy.store.migrations.sqlfile import run_section

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_section(revision, "up")


def downgrade() -> None:
    run_section(revision, "down")
