"""The exception tree every storage backend raises.

No driver exception escapes the public API: the store translates them into these types, so a
caller catches the same class whichever database is behind it.
"""

from __future__ import annotations

__all__ = [
    "APIKeyNotFound",
    "AlreadyBootstrapped",
    "ClaimLost",
    "CompozyError",
    "ConfigError",
    "ConflictError",
    "ConstraintViolation",
    "DuplicateKey",
    "EmailExists",
    "ExecutionFinished",
    "LastAdmin",
    "NotFoundError",
    "StoreBusy",
    "StoreUnavailable",
    "TaskNotFound",
    "UserNotFound",
    "ValidationError",
    "WorkflowNotFound",
    "WorkflowNotReady",
]


class CompozyError(Exception):
    """Base class of every error the compozy API raises on purpose."""


class NotFoundError(CompozyError):
    """The entity named by an id or key does not exist."""


class WorkflowNotFound(NotFoundError):
    """No workflow execution matches."""


class TaskNotFound(NotFoundError):
    """No task execution matches."""


class UserNotFound(NotFoundError):
    """No user matches."""


class APIKeyNotFound(NotFoundError):
    """No API key matches."""


class ConflictError(CompozyError):
    """The write would break a uniqueness rule."""


class EmailExists(ConflictError):
    """Another user already has this email (compared case-insensitively)."""


class AlreadyBootstrapped(ConflictError):
    """An admin user exists already, so the initial admin was not created."""


class DuplicateKey(ConflictError):
    """An API key with this id, prefix or fingerprint exists already."""


class LastAdmin(ConflictError):
    """The change would leave no admin, or no admin with an API key: nobody could manage users."""


class ConstraintViolation(CompozyError):
    """A foreign key or CHECK constraint refused the write."""


class WorkflowNotReady(CompozyError):
    """The workflow still has top-level tasks running, so it cannot be completed."""


class ValidationError(CompozyError):
    """A value was refused before any SQL ran."""


class StoreUnavailable(CompozyError):
    """The database cannot be reached, or stayed busy past the configured timeout."""


class StoreBusy(StoreUnavailable):
    """A transaction lost a transient conflict (deadlock, serialization failure, a lock that
    stayed taken, SQLite busy past its timeout) and was rolled back: running the whole
    transaction again can succeed (``Store.run_in_transaction`` does, a bounded number of times)."""


class ClaimLost(CompozyError):
    """A worker wrote to an execution it no longer owns (another worker claimed it, or it was
    released, cancelled or finished); the worker must stop working on it."""


class ExecutionFinished(ConflictError):
    """The execution is already terminal, so it cannot be cancelled (or claimed) any more."""


class ConfigError(CompozyError):
    """The configuration is invalid; the message names the field and what to do."""
