"""Alembic environment: migrate the connection that ``compozy.store.migrations`` hands over.

The caller has already begun the transaction (``BEGIN IMMEDIATE`` on SQLite, with foreign keys
off; a PostgreSQL advisory lock taken), so Alembic runs inside it and does not manage its own.
"""

from alembic import context

from compozy.store.tables import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
