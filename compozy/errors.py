"""The exception tree every storage backend raises (SPEC section 2).

No driver exception escapes the public API: the store translates them into these types, so a
caller catches the same class whichever database is behind it.
"""

from __future__ import annotations

__all__ = [
    "APIKeyNotFound",
    "AlreadyBootstrapped",
    "CompozyError",
    "ConfigError",
    "ConflictError",
    "ConstraintViolation",
    "DuplicateKey",
    "EmailExists",
    "NotFoundError",
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


class ConstraintViolation(CompozyError):
    """A foreign key or CHECK constraint refused the write."""


class WorkflowNotReady(CompozyError):
    """The workflow still has top-level tasks running, so it cannot be completed."""


class ValidationError(CompozyError):
    """A value was refused before any SQL ran."""


class StoreUnavailable(CompozyError):
    """The database cannot be reached, or stayed busy past the configured timeout."""


class ConfigError(CompozyError):
    """The configuration is invalid; the message names the field and what to do."""
