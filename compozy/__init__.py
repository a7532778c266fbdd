"""Compozy persistence: workflow, task and auth state on PostgreSQL or SQLite."""

__version__ = "0.1.0"
