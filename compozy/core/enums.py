"""The enumerations shared by every entity."""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class _Choice(StrEnum):
    """An enumeration whose values are found in any letter case: ``Status("running")`` is
    ``Status.RUNNING``, in the domain, in the API's parameters and bodies, and in the CLI."""

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        # ASCII only: Unicode case rules would also match look-alikes (U+017F, a long s).
        if isinstance(value, str) and value.isascii():
            lowered = value.lower()
            for member in cls:
                if member.value.lower() == lowered:
                    return member
        return None


class Status(_Choice):
    """Execution status of a workflow or task, stored upper-case."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"
    WAITING = "WAITING"
    PAUSED = "PAUSED"

    @property
    def is_running(self) -> bool:
        """True for PENDING, RUNNING, WAITING and PAUSED."""
        return self in RUNNING_STATUSES

    @property
    def is_failed(self) -> bool:
        """True for FAILED, TIMED_OUT and CANCELED."""
        return self in FAILED_STATUSES

    @property
    def is_terminal(self) -> bool:
        """True for SUCCESS and the failed set."""
        return self in TERMINAL_STATUSES


RUNNING_STATUSES = frozenset({Status.PENDING, Status.RUNNING, Status.WAITING, Status.PAUSED})
FAILED_STATUSES = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELED})
TERMINAL_STATUSES = frozenset({Status.SUCCESS}) | FAILED_STATUSES


class Component(_Choice):
    """What kind of thing a task state belongs to."""

    WORKFLOW = "workflow"
    TASK = "task"
    AGENT = "agent"
    TOOL = "tool"
    LOG = "log"


class ExecutionType(_Choice):
    """How a task runs; all nine are accepted by both backends."""

    BASIC = "basic"
    ROUTER = "router"
    PARALLEL = "parallel"
    COLLECTION = "collection"
    COMPOSITE = "composite"
    WAIT = "wait"
    SIGNAL = "signal"
    AGGREGATE = "aggregate"
    MEMORY = "memory"


class Role(_Choice):
    """A user's role."""

    ADMIN = "admin"
    USER = "user"
