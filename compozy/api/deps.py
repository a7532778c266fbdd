"""What the routes share: the app's context, the engine protocol, auth dependencies, id params."""

# No `from __future__ import annotations` here: FastAPI reads dependency annotations at route
# registration, and `require_admin`'s names `require_user`, a local that a string annotation
# could not be resolved against.

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from compozy.api.auth import Authenticator, Principal
from compozy.api.errors import ApiError
from compozy.api.models import ID_PATTERN, STORABLE, ErrorResponse
from compozy.core.values import MAX_ID_LENGTH
from compozy.store import Store, StoreHealth

__all__ = [
    "ApiContext",
    "AuthDependencies",
    "ExecutionStarter",
    "ExecutionWatcher",
    "IdPath",
    "TaskOutline",
    "WorkflowOutline",
    "auth_dependencies",
    "error_responses",
    "no_engine",
]


class TaskOutline(Protocol):
    """What ``GET /api/v0/workflows`` shows of a task definition."""

    @property
    def id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def tool(self) -> str | None: ...

    @property
    def description(self) -> str | None: ...

    def children(self) -> Iterator["TaskOutline"]:
        """The tasks directly under this one (parallel, collection and router tasks)."""
        ...


class WorkflowOutline(Protocol):
    """What ``GET /api/v0/workflows`` shows of a workflow definition."""

    @property
    def id(self) -> str: ...

    @property
    def description(self) -> str | None: ...

    @property
    def input_schema(self) -> Mapping[str, Any] | None: ...

    @property
    def outputs(self) -> Mapping[str, Any] | None: ...

    @property
    def tasks(self) -> Sequence[TaskOutline]: ...


class ExecutionStarter(Protocol):
    """What the API needs of a workflow engine (``compozy.engine.Engine`` satisfies it)."""

    @property
    def definitions(self) -> Mapping[str, WorkflowOutline]:
        """The workflow definitions it runs, by id (read on every request: they may change)."""
        ...

    def start(self, workflow_id: str, input: dict[str, Any] | None, /) -> str:
        """Start an execution in the background and return its workflow_exec_id.

        Raises a ``NotFoundError`` for an unknown workflow and ``ValidationError`` for input
        its schema refuses, both before anything is stored.
        """
        ...


@runtime_checkable
class ExecutionWatcher(Protocol):
    """An engine that can say when an execution may have changed (``Engine.watch``): the
    long-poll of ``GET .../executions/workflows/{id}?wait=`` then answers at once."""

    def watch(self, workflow_exec_id: str, callback: Callable[[], None], /) -> Callable[[], None]:
        """Call ``callback`` (from any thread) when the execution may have changed; returns
        the function that stops the calls."""
        ...


def no_engine(consequence: str) -> ApiError:
    """The 503 of a route that needs the engine, on an app served without one."""
    return ApiError(
        503,
        "NoEngine",
        f"this server runs no workflow engine, so {consequence}; start it with `compozy start`",
    )


@dataclass(frozen=True)
class ApiContext:
    """Everything the routes of one app use; nothing is global, so apps never share state."""

    store: Store
    engine: ExecutionStarter | None
    authenticator: Authenticator
    health: Callable[[], StoreHealth]
    bcrypt_rounds: int


IdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN), STORABLE]
"""An id in a path: 1 to 255 characters that both databases can store; anything else is 422."""

_DESCRIPTIONS = {
    400: "The body could not be read as JSON (for instance, it is not UTF-8)",
    401: "No API key, a malformed Authorization header, or an unknown or deleted key",
    403: "The key's user is not an admin",
    404: "No such entity (or no such route)",
    409: "The request conflicts with what is stored",
    413: "The request body is over server.max_body_bytes",
    415: "The request has a body that is not sent as application/json",
    422: "The request's parameters or body are invalid",
    503: "The database (or the workflow engine) is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with the error body."""
    return {s: {"model": ErrorResponse, "description": _DESCRIPTIONS[s]} for s in statuses}


@dataclass(frozen=True)
class AuthDependencies:
    """FastAPI dependencies: any valid key (``user``) or an admin's key (``admin``)."""

    user: Callable[..., Principal]
    admin: Callable[..., Principal]


def auth_dependencies(ctx: ApiContext) -> AuthDependencies:
    """Build the auth dependencies of one app."""
    # Declared so that OpenAPI documents the bearer scheme on every route that needs it; the
    # header is parsed by the Authenticator so that every refusal has the same 401 body.
    bearer = HTTPBearer(
        auto_error=False,
        scheme_name="APIKey",
        description="An API key made by an admin (POST /api/v0/users/{user_id}/api-keys)",
    )

    def require_user(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> Principal:
        return ctx.authenticator.authenticate(request.headers.get("authorization"))

    def require_admin(principal: Annotated[Principal, Depends(require_user)]) -> Principal:
        if not principal.is_admin:
            raise ApiError(
                403,
                "Forbidden",
                f"user {principal.user.id} is not an admin; ask an admin to do this",
            )
        return principal

    return AuthDependencies(user=require_user, admin=require_admin)
