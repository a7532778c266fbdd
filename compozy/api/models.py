"""The JSON shapes of the HTTP API (pydantic models), and the checks on what clients send.

Responses are built from entities by ``compozy.api.serialize``; the models of task and
workflow executions take their fields from the domain dataclasses (see ``_fields_of``).
Timestamps are ISO 8601 UTC with microseconds (``...T12:00:00.000000Z``, fixed width, like the
usage JSON), enums travel as their values, and usage is its JSON array.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Collection
from datetime import datetime
from functools import reduce
from types import NoneType, UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    create_model,
    field_validator,
)

from compozy.auth import MAX_EMAIL_LENGTH, Role
from compozy.core import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Status
from compozy.core.values import MAX_ID_LENGTH, MAX_JSON_DEPTH, check_json, format_timestamp
from compozy.errors import ValidationError
from compozy.task import TaskState
from compozy.usage import UsageSummary
from compozy.workflow import WorkflowSummary

__all__ = [
    "CURSOR_PATTERN",
    "EMAIL_PATTERN",
    "ID_PATTERN",
    "MAX_CURSOR_LENGTH",
    "MAX_INPUT_DEPTH",
    "PATTERN_MEANINGS",
    "STORABLE",
    "STORED_TIMESTAMPS",
    "APIKeyOut",
    "APIKeyPage",
    "CreateUserRequest",
    "CreatedAPIKey",
    "ErrorBody",
    "ErrorResponse",
    "ExecutionStarted",
    "HealthResponse",
    "PageQuery",
    "Progress",
    "StartExecutionRequest",
    "TaskExecution",
    "TaskNode",
    "UsageEntryOut",
    "UserOut",
    "UserPage",
    "WorkflowExecutionDetail",
    "WorkflowExecutionPage",
    "WorkflowExecutionSummary",
    "WorkflowListQuery",
    "format_timestamp",
]

_NOT_SPACE = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL_PATTERN = rf"^[^{_NOT_SPACE}]+@[^@{_NOT_SPACE}]+$"
r"""name@domain with no whitespace or control character: what ``User.validate`` accepts, stated
in the schema so that clients (and fuzzers) can tell a valid email before sending it. The
characters are listed rather than written ``\s``, which means different sets in Python (whose
``str.isspace`` the domain uses), in JSON Schema's ECMA dialect and in pydantic's Rust engine."""
ID_PATTERN = r"^[^\x00]+$"
"""Ids may hold any character but U+0000, which neither database can store."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
"""Cursors are unpadded URL-safe base64: the alphabet is checked here, the content by the store."""
MAX_CURSOR_LENGTH = 8192
"""Ample for any cursor the store gives out (a timestamp and an id of up to 255 characters)."""
PATTERN_MEANINGS = {
    EMAIL_PATTERN: "is not an email address of the form name@domain without spaces",
    ID_PATTERN: "contains the character U+0000, which cannot be stored",
    CURSOR_PATTERN: "is not a cursor this server gave out; start again without a cursor",
}
"""What a value failing each pattern is told, instead of the pattern itself."""
MAX_INPUT_DEPTH = MAX_JSON_DEPTH
"""Deeper JSON input is refused, as the store refuses any deeper JSON (compozy.core)."""


Timestamp = Annotated[
    datetime,
    # The one formatter (compozy.core.values): UTC, fixed width, four-digit years.
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _refuse_unstorable_text(value: str) -> str:
    # Neither database can store U+0000, and a lone surrogate (a JSON escape such as "\ud800"
    # makes one) cannot even be encoded as UTF-8: refused here as a 422 instead of reaching a
    # driver. pydantic's str type refuses surrogates itself; strings inside ``input`` (Any) not.
    if "\x00" in value:
        raise ValueError("contains the character U+0000, which cannot be stored")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate, which is not valid Unicode") from None
    return value


STORABLE = AfterValidator(_refuse_unstorable_text)
"""Refuses strings that no database can store (U+0000, invalid Unicode). Put it after any
length or pattern constraint in ``Annotated``: pydantic leaves constraints that follow a
validator out of the JSON schema, so OpenAPI would not show them."""


def _check_input(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse JSON that a database cannot store, nests too deep or is not valid Unicode."""
    if value is None:
        return None
    try:
        check_json(value, "input")  # the store's own check, depth included
    except ValidationError as exc:
        raise ValueError(str(exc)) from None
    return value


# ---------------------------------------------------------------------------------------------
# Errors and health


class ErrorBody(BaseModel):
    """What went wrong: a stable code and a sentence for people."""

    code: str = Field(
        description="The error class (e.g. WorkflowNotFound) or HTTP-level code (Unauthorized)"
    )
    message: str


class ErrorResponse(BaseModel):
    """Every error response has this body."""

    error: ErrorBody


class HealthResponse(BaseModel):
    """Whether the database answers and its schema is at the head revision."""

    status: Literal["ok", "unavailable"]
    driver: str = Field(description="postgres or sqlite", examples=["sqlite"])
    schema_revision: str | None = Field(description="The database's revision; null if unknown")
    head: str = Field(description="The newest revision this server knows")


# ---------------------------------------------------------------------------------------------
# Pages

_NEXT_CURSOR = (
    "Pass it as `cursor` (with the same filters) to read the next page; null on the last page"
)


class PageQuery(BaseModel):
    """``limit`` and ``cursor`` of a list route; an unknown parameter is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(
        default=DEFAULT_PAGE_SIZE,
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"Items per page, 1 to {MAX_PAGE_SIZE}",
    )
    cursor: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_CURSOR_LENGTH,
            pattern=CURSOR_PATTERN,
            description=(
                "Opaque: the `next_cursor` of the previous page. Omit it for the first page; "
                "one this server did not give out is a 422"
            ),
        ),
    ] = None


# ---------------------------------------------------------------------------------------------
# Executions


class StartExecutionRequest(BaseModel):
    """Body of ``POST /api/v0/workflows/{workflow_id}/executions``; the body itself is optional."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The workflow's input, checked against its input schema. Any JSON object whose "
            f"strings hold no U+0000 and that nests at most {MAX_INPUT_DEPTH} levels deep"
        ),
    )

    @field_validator("input")
    @classmethod
    def _storable(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_input(value)


class WorkflowListQuery(PageQuery):
    """Query of ``GET /api/v0/executions/workflows``; an unknown parameter is a 422, not ignored,
    so that a misspelt filter cannot silently list everything."""

    status: Status | None = Field(default=None, description="Only executions in this status")
    workflow_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=ID_PATTERN,
            description="Only executions of this workflow",
        ),
        STORABLE,
    ] = None


class ExecutionStarted(BaseModel):
    """The execution was accepted and runs in the background."""

    workflow_exec_id: str
    workflow_id: str
    status: Status = Field(description="Always PENDING: poll the execution for progress")


class UsageEntryOut(BaseModel):
    """Token usage of one (provider, model, source)."""

    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    reasoning_tokens: int | None
    cached_prompt_tokens: int | None
    input_audio_tokens: int | None
    output_audio_tokens: int | None
    agent_ids: list[str]
    captured_at: Timestamp | None
    updated_at: Timestamp | None
    source: str


# The task and workflow execution models take their fields from the domain dataclasses
# (``TaskState``, ``WorkflowSummary``): a field added there, with its column, is in the API
# with no edit here or in serialize.py. Each comes in field order, typed as the API shows it
# (see ``_shown_as``) and required: a nullable field may be null but is always sent.

STORED_TIMESTAMPS = ("created_at", "updated_at")
"""Optional on the entities (the store sets them on every write), always present in the API."""


def _shown_as(name: str, hint: Any) -> Any:
    """The API type of an entity field: a usage summary as its entries, datetimes as
    ``Timestamp``, anything else (enums included) as it is."""
    if get_origin(hint) in (Union, UnionType):
        args = [
            arg for arg in get_args(hint) if not (name in STORED_TIMESTAMPS and arg is NoneType)
        ]
        return reduce(operator.or_, [_shown_as(name, arg) for arg in args])
    if hint is datetime:
        return Timestamp
    if hint is UsageSummary:
        return list[UsageEntryOut]
    return hint


def _fields_of(entity: type[Any], *, leave_out: Collection[str] = ()) -> type[BaseModel]:
    """A model with the fields of the dataclass ``entity`` (but ``leave_out``), as shown."""
    hints = get_type_hints(entity)
    fields: dict[str, Any] = {
        f.name: (_shown_as(f.name, hints[f.name]), ...)
        for f in dataclasses.fields(entity)
        if f.name not in leave_out
    }
    return create_model(f"_{entity.__name__}Fields", **fields)


_WORKFLOW_FIELDS_NOT_COPIED = (
    "task_status_counts",  # declared below: string keys
    "worker_id",  # declared below, with a description (and where today's order has them)
    "claim_count",
    "cancel_requested_at",  # shown as the flag ``cancel_requested``
    "lease_expires_at",  # the workers' business, not shown
)

if TYPE_CHECKING:  # mypy cannot follow a base made at run time: it sees plain models
    _TaskStateFields = BaseModel
    _WorkflowSummaryFields = BaseModel
else:
    _TaskStateFields = _fields_of(TaskState)
    _WorkflowSummaryFields = _fields_of(WorkflowSummary, leave_out=_WORKFLOW_FIELDS_NOT_COPIED)


class TaskExecution(_TaskStateFields):
    """One task execution."""


class TaskNode(TaskExecution):
    """A task execution with its direct children, each with theirs."""

    children: list[TaskNode] = Field(default_factory=list)


class WorkflowExecutionSummary(_WorkflowSummaryFields):
    """A workflow execution without its tasks: list items stay small however big the tree."""

    task_count: int = Field(description="Distinct task ids in the execution (latest state each)")
    task_status_counts: dict[str, int] = Field(
        description="Status -> how many of those latest task states have it (zeros omitted)"
    )
    worker_id: str | None = Field(
        description="The worker that claimed the execution last; null until one does"
    )
    claim_count: int = Field(
        description="How many times a worker claimed the execution (more than 1: taken over)"
    )
    cancel_requested: bool = Field(
        description="Cancellation was requested; a RUNNING execution's worker stops it shortly"
    )


class WorkflowExecutionPage(BaseModel):
    """One page of workflow executions, newest first."""

    items: list[WorkflowExecutionSummary]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class WorkflowExecutionDetail(WorkflowExecutionSummary):
    """A workflow execution with every task state, as a tree."""

    tasks: list[TaskNode] = Field(
        description="Top-level task executions (oldest first), each with its children nested"
    )


class Progress(BaseModel):
    """Counts over the direct children of a task execution."""

    total_children: int
    success_count: int
    failed_count: int
    canceled_count: int
    timed_out_count: int
    pending_count: int
    running_count: int = Field(description="RUNNING + WAITING + PAUSED")
    terminal_count: int
    status_counts: dict[str, int] = Field(description="Status -> count (zeros omitted)")
    completion_rate: float
    failure_rate: float


# ---------------------------------------------------------------------------------------------
# Users and API keys


class CreateUserRequest(BaseModel):
    """Body of ``POST /api/v0/users``."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[
        str,
        Field(
            min_length=3,
            max_length=MAX_EMAIL_LENGTH,
            pattern=EMAIL_PATTERN,
            description="Unique, compared case-insensitively; stored as given",
        ),
        STORABLE,
    ]
    role: Role = Role.USER


class UserOut(BaseModel):
    """A user."""

    id: str
    email: str
    role: Role
    created_at: Timestamp


class UserPage(BaseModel):
    """One page of users, newest first."""

    items: list[UserOut]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class APIKeyOut(BaseModel):
    """An API key's metadata: never its hash, never its plaintext."""

    id: str
    user_id: str
    prefix: str = Field(description="The public part of the key, to tell keys apart")
    created_at: Timestamp
    last_used: Timestamp | None


class APIKeyPage(BaseModel):
    """One page of a user's API keys (metadata only), newest first."""

    items: list[APIKeyOut]
    next_cursor: str | None = Field(description=_NEXT_CURSOR)


class CreatedAPIKey(APIKeyOut):
    """A new API key, with the only copy of its plaintext."""

    api_key: str = Field(description="The plaintext key: shown in this response only, store it")
