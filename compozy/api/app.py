"""``create_app``: the FastAPI application over one Store (and optionally a workflow engine)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, FastAPI, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

import compozy
from compozy.api.admin import admin_router
from compozy.api.auth import DEFAULT_CACHE_SIZE, Authenticator, VerifiedKeyCache
from compozy.api.deps import ApiContext, ExecutionStarter, auth_dependencies, error_responses
from compozy.api.docs import docs_page
from compozy.api.errors import install_error_handlers
from compozy.api.executions import executions_router
from compozy.api.knowledge import knowledge_router
from compozy.api.metrics import CONTENT_TYPE, render_metrics
from compozy.api.middleware import AccessLog, JsonBodies
from compozy.api.models import HealthResponse
from compozy.api.workflows import workflows_router
from compozy.auth.keys import BCRYPT_ROUNDS
from compozy.knowledge.bases import KnowledgeBases
from compozy.store import Store, StoreHealth

__all__ = ["create_app"]

_DESCRIPTION = """\
Workflow executions, their task trees, users and API keys, on PostgreSQL or SQLite.

Every route but `/health`, `/metrics` and the documentation needs
`Authorization: Bearer <api key>`; the user and API-key routes need an admin's key. A request
body must be JSON (`Content-Type: application/json`, else 415) of at most
`server.max_body_bytes` (10 MiB by default, else 413). Every error has the body
`{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(
    store: Store,
    *,
    engine: ExecutionStarter | None = None,
    revision_info: Callable[[], StoreHealth] | None = None,
    bcrypt_rounds: int = BCRYPT_ROUNDS,
    key_cache_size: int = DEFAULT_CACHE_SIZE,
    max_body_bytes: int = 10 * 1024 * 1024,
    metrics_auth: bool = False,
    access_log: bool = False,
    knowledge: KnowledgeBases | None = None,
) -> FastAPI:
    """The HTTP API over ``store``.

    ``engine`` starts executions (without one, starting answers 503). ``revision_info`` is
    what ``GET /health`` reports, ``store.health`` by default. ``bcrypt_rounds`` is the work
    factor of keys made through the API (lower it in tests only). ``key_cache_size`` bounds the
    per-app cache of keys whose bcrypt check passed. A request body over ``max_body_bytes``
    is refused with 413; ``metrics_auth`` makes ``GET /metrics`` need an API key;
    ``access_log`` logs each request on the ``compozy.access`` logger (INFO).
    ``knowledge`` is what ``/api/v0/knowledge/{kb}/...`` searches and ingests (none without).
    """
    ctx = ApiContext(
        store=store,
        engine=engine,
        authenticator=Authenticator(store, VerifiedKeyCache(key_cache_size)),
        health=revision_info if revision_info is not None else store.health,
        bcrypt_rounds=bcrypt_rounds,
    )
    # FastAPI's own /docs and /redoc load their scripts from a CDN; ours is one offline page.
    app = FastAPI(
        title="compozy",
        version=compozy.__version__,
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(JsonBodies, max_body_bytes=max_body_bytes)
    if access_log:
        app.add_middleware(AccessLog)  # added last, so it is outermost and sees every answer
    auth = auth_dependencies(ctx)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi()))

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics" + (" (any valid key)" if metrics_auth else " (no auth)"),
        response_class=PlainTextResponse,
        dependencies=[Depends(auth.user)] if metrics_auth else [],
        responses=error_responses(401) if metrics_auth else None,
    )
    def metrics() -> PlainTextResponse:
        """Executions by workflow and status, the durations of finished ones (both from the
        database, the same on every server over it), and this process's connection pool, in
        Prometheus's text format."""
        return PlainTextResponse(render_metrics(store), media_type=CONTENT_TYPE)

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

    app.include_router(workflows_router(ctx, auth))
    app.include_router(executions_router(ctx, auth))
    app.include_router(admin_router(ctx, auth))
    app.include_router(knowledge_router(knowledge, auth))
    # Kept reachable for tests and for whoever serves the app (cache size, engine, store).
    app.state.compozy = ctx
    return app
