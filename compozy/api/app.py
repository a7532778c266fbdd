"""``create_app``: the FastAPI application over one Store (and optionally a workflow engine)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Response

import compozy
from compozy.api.admin import admin_router
from compozy.api.auth import DEFAULT_CACHE_SIZE, Authenticator, VerifiedKeyCache
from compozy.api.deps import ApiContext, ExecutionStarter, auth_dependencies
from compozy.api.errors import install_error_handlers
from compozy.api.executions import executions_router
from compozy.api.models import HealthResponse
from compozy.auth.keys import BCRYPT_ROUNDS
from compozy.store import Store, StoreHealth

__all__ = ["create_app"]

_DESCRIPTION = """\
Workflow executions, their task trees, users and API keys, on PostgreSQL or SQLite.

Every route but `/health` and the documentation needs `Authorization: Bearer <api key>`;
the user and API-key routes need an admin's key. Every error has the body
`{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(
    store: Store,
    *,
    engine: ExecutionStarter | None = None,
    revision_info: Callable[[], StoreHealth] | None = None,
    bcrypt_rounds: int = BCRYPT_ROUNDS,
    key_cache_size: int = DEFAULT_CACHE_SIZE,
) -> FastAPI:
    """The HTTP API over ``store``.

    ``engine`` starts executions (without one, starting answers 503). ``revision_info`` is
    what ``GET /health`` reports, ``store.health`` by default. ``bcrypt_rounds`` is the work
    factor of keys made through the API (lower it in tests only). ``key_cache_size`` bounds the
    per-app cache of keys whose bcrypt check passed.
    """
    ctx = ApiContext(
        store=store,
        engine=engine,
        authenticator=Authenticator(store, VerifiedKeyCache(key_cache_size)),
        health=revision_info if revision_info is not None else store.health,
        bcrypt_rounds=bcrypt_rounds,
    )
    app = FastAPI(title="compozy", version=compozy.__version__, description=_DESCRIPTION)
    install_error_handlers(app)
    auth = auth_dependencies(ctx)

    @app.get(
        "/health",
        tags=["health"],
        summary="Database status and schema revision (no auth)",
        responses={503: {"model": HealthResponse, "description": "The database is not usable"}},
    )
    def health(response: Response) -> HealthResponse:
        """``ok`` when the database answers and its schema is at the head revision, else 503."""
        found = ctx.health()
        if not found.ok:
            response.status_code = 503
        return HealthResponse(
            status="ok" if found.ok else "unavailable",
            driver=found.driver,
            schema_revision=found.revision,
            head=found.head,
        )

    app.include_router(executions_router(ctx, auth))
    app.include_router(admin_router(ctx, auth))
    # Kept reachable for tests and for whoever serves the app (cache size, engine, store).
    app.state.compozy = ctx
    return app
