"""``POST /api/v0/knowledge/{kb}/query`` (any valid key) and ``.../ingest`` (admin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from compozy.api.deps import AuthDependencies, error_responses
from compozy.api.errors import ApiError
from compozy.errors import ConfigError
from compozy.knowledge.bases import KnowledgeBases, UnknownKnowledgeBase, match_json
from compozy.knowledge.embedders import EmbedderUnavailable

__all__ = ["IngestResponse", "KnowledgeQuery", "QueryResponse", "knowledge_router"]

_T = TypeVar("_T")

KbPath = Annotated[str, Path(min_length=1, max_length=255, description="A knowledge base id")]


class KnowledgeQuery(BaseModel):
    """What to search for."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=10_000)
    top_k: int | None = Field(
        default=None, ge=1, le=50, description="Default: the knowledge base's retrieval.top_k"
    )


class MatchOut(BaseModel):
    """A chunk, by cosine similarity to the query (in [-1, 1], best first)."""

    id: str
    score: float
    text: str
    source: str | None = Field(description="The file, relative to knowledge.root")
    chunk_index: int | None = None


class QueryResponse(BaseModel):
    """The best matches of a query."""

    kb: str
    matches: list[MatchOut]


class IngestResponse(BaseModel):
    """What an ingest did: files read, chunks now stored, files changed or removed."""

    kb: str
    files: int
    chunks: int
    changed: list[str]
    removed: list[str]
    embedded: int = Field(description="Chunks sent to the embedder")
    written: int = Field(description="Chunks written to the vector store")


def knowledge_router(knowledge: KnowledgeBases | None, auth: AuthDependencies) -> APIRouter:
    """The knowledge routes over ``knowledge`` (None: this server has none)."""
    router = APIRouter(prefix="/api/v0/knowledge", tags=["knowledge"])

    def run(kb: str, action: Callable[[KnowledgeBases], _T]) -> _T:
        if knowledge is None:
            raise UnknownKnowledgeBase(f"no knowledge base {kb!r}; this server has none")
        try:
            return action(knowledge)
        except (EmbedderUnavailable, ConfigError) as exc:
            raise ApiError(503, "KnowledgeUnavailable", str(exc)) from None

    @router.post(
        "/{kb}/query",
        summary="Search a knowledge base (any valid key)",
        dependencies=[Depends(auth.user)],
        responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    )
    def query(kb: KbPath, body: KnowledgeQuery) -> QueryResponse:
        """The chunks most similar to `query` (the knowledge base's `retrieval.top_k` and
        `min_score` apply unless `top_k` is given). An unknown `kb` is 404, naming the ids
        there are."""
        matches = run(kb, lambda bases: bases.query(kb, body.query, top_k=body.top_k))
        return QueryResponse(kb=kb, matches=[MatchOut(**match_json(m)) for m in matches])

    @router.post(
        "/{kb}/ingest",
        summary="Ingest a knowledge base's sources (admin)",
        dependencies=[Depends(auth.admin)],
        responses=error_responses(401, 403, 404, 422, 503),
    )
    def ingest(kb: KbPath) -> IngestResponse:
        """Read the sources on the server and store their chunks; files unchanged since the
        last ingest are not embedded or written again."""
        report = run(kb, lambda bases: bases.ingest(kb))
        return IngestResponse(
            kb=kb,
            files=report.files,
            chunks=report.chunks,
            changed=report.changed,
            removed=report.removed,
            embedded=report.embedded,
            written=report.written,
        )

    return router
