"""Knowledge bases by id, from the configuration: ingest and query, and the ``knowledge_search``
workflow tool.

``KnowledgeBases(config)`` opens an embedder and a vector store the first time a knowledge base
needs them and keeps them until ``close()`` (a vector DB shared by several knowledge bases is
opened once). It is thread-safe: the API's routes and the engine's tools use one instance.

The ``knowledge_search`` tool runs inside the engine, which hands tools only their ``with``
arguments; it searches the knowledge bases of the process's *active* instance, which
``compozy run``, ``compozy start`` and ``compozy worker`` set with ``activate`` for the life of
their engine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compozy.core.closing import ClosedOnExit
from compozy.errors import CompozyError, NotFoundError, ValidationError
from compozy.knowledge import Match, VectorStore
from compozy.knowledge.embedders import Embedder, open_embedder
from compozy.knowledge.ingest import CHUNK, IngestReport, Progress, ingest
from compozy.knowledge.providers import open_vector_store

if TYPE_CHECKING:
    from compozy.config import Config, EmbedderConfig, KnowledgeBaseConfig

__all__ = [
    "KnowledgeBase",
    "KnowledgeBases",
    "UnknownKnowledgeBase",
    "activate",
    "active",
    "knowledge_search",
    "match_json",
]

StoreOpener = Callable[..., VectorStore]


class UnknownKnowledgeBase(NotFoundError):
    """No knowledge base has the requested id."""


@dataclass(frozen=True)
class KnowledgeBase:
    """One configured knowledge base, with its embedder and vector store opened."""

    config: KnowledgeBaseConfig
    embedder_config: EmbedderConfig
    embedder: Embedder
    store: VectorStore
    root: str
    _ingest_lock: threading.Lock

    @property
    def id(self) -> str:
        return self.config.id

    def ingest(self, progress: Progress | None = None) -> IngestReport:
        """Bring the vector store up to date with the sources (one ingest at a time here)."""
        with self._ingest_lock:
            return ingest(
                self.config, self.embedder_config, self.embedder, self.store, self.root, progress
            )

    def query(
        self, text: str, *, top_k: int | None = None, min_score: float | None = None
    ) -> list[Match]:
        """The chunks most similar to ``text``: ``top_k`` and ``min_score`` default to the
        knowledge base's ``retrieval`` settings."""
        if not isinstance(text, str) or not text.strip():
            raise ValidationError(f"knowledge base {self.id!r}: the query is empty; give a text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"knowledge base {self.id!r}: the query is not valid Unicode text (it holds a "
                "lone surrogate)"
            ) from None
        limit = self.config.retrieval.top_k if top_k is None else top_k
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
            raise ValidationError(
                f"knowledge base {self.id!r}: top_k must be a whole number from 1 to 50, "
                f"got {limit!r}"
            )
        floor = self.config.retrieval.min_score if min_score is None else min_score
        vector = self.embedder.embed([text])[0]
        return self.store.search(
            vector, top_k=limit, min_score=floor, where={"kb": self.id, "kind": CHUNK}
        )


class KnowledgeBases(ClosedOnExit):
    """The configured knowledge bases, opened on first use."""

    def __init__(
        self,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        open_store: StoreOpener | None = None,
    ) -> None:
        self._config = config
        self._environ = environ
        self._open_store = open_store or open_vector_store
        self._lock = threading.Lock()
        self._stores: dict[str, VectorStore] = {}
        self._embedders: dict[str, Embedder] = {}
        self._bases: dict[str, KnowledgeBase] = {}
        self._closed = False

    @property
    def ids(self) -> list[str]:
        """The configured knowledge base ids, in configuration order."""
        return [base.id for base in self._config.knowledge.knowledge_bases]

    def config_of(self, kb_id: str) -> KnowledgeBaseConfig:
        """The configuration of knowledge base ``kb_id`` (``UnknownKnowledgeBase`` if none)."""
        found = self._config.knowledge.knowledge_base(kb_id)
        if found is None:
            ids = ", ".join(repr(i) for i in self.ids)
            configured = (
                f"the configured ones are {ids}"
                if ids
                else (
                    "none is configured (add one under knowledge.knowledge_bases in compozy.yaml)"
                )
            )
            raise UnknownKnowledgeBase(f"no knowledge base {kb_id!r}; {configured}")
        return found

    def get(self, kb_id: str) -> KnowledgeBase:
        """Knowledge base ``kb_id``, its embedder and vector store opened."""
        base_config = self.config_of(kb_id)
        knowledge = self._config.knowledge
        with self._lock:
            if self._closed:
                raise CompozyError("the knowledge bases are closed")
            found = self._bases.get(kb_id)
            if found is not None:
                return found
            vector_db = knowledge.vector_db_for(base_config)
            embedder_config = knowledge.embedder_for(base_config)
            store = self._stores.get(vector_db.id)
            if store is None:
                store = self._open_store(vector_db, database=self._config.database)
                self._stores[vector_db.id] = store
            embedder_key = base_config.embedder or f"hashing:{vector_db.dimension}"
            embedder = self._embedders.get(embedder_key)
            if embedder is None:
                embedder = open_embedder(embedder_config, environ=self._environ)
                self._embedders[embedder_key] = embedder
            assert knowledge.root is not None  # the config sets it
            found = KnowledgeBase(
                base_config, embedder_config, embedder, store, knowledge.root, threading.Lock()
            )
            self._bases[kb_id] = found
            return found

    def ingest(self, kb_id: str, progress: Progress | None = None) -> IngestReport:
        """Ingest knowledge base ``kb_id`` (see ``compozy.knowledge.ingest``)."""
        return self.get(kb_id).ingest(progress)

    def query(
        self, kb_id: str, text: str, *, top_k: int | None = None, min_score: float | None = None
    ) -> list[Match]:
        """Search knowledge base ``kb_id`` (see ``KnowledgeBase.query``)."""
        return self.get(kb_id).query(text, top_k=top_k, min_score=min_score)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            closing: list[VectorStore | Embedder] = [*self._stores.values()]
            closing.extend(self._embedders.values())
            self._stores.clear()
            self._embedders.clear()
            self._bases.clear()
        for resource in closing:
            resource.close()


def match_json(match: Match) -> dict[str, Any]:
    """A match as the tool and the API return it."""
    return {
        "id": match.id,
        "score": match.score,
        "text": match.text,
        "source": match.metadata.get("source"),
        "chunk_index": match.metadata.get("chunk_index"),
    }


# --- the knowledge_search tool -------------------------------------------------------------------

_active: list[KnowledgeBases] = []
_active_lock = threading.Lock()


@contextmanager
def activate(bases: KnowledgeBases) -> Iterator[KnowledgeBases]:
    """Make ``bases`` the ones ``knowledge_search`` searches, until the block ends."""
    with _active_lock:
        _active.append(bases)
    try:
        yield bases
    finally:
        with _active_lock:
            _active.remove(bases)


def active() -> KnowledgeBases | None:
    """The knowledge bases ``knowledge_search`` searches now (the last activated), or None."""
    with _active_lock:
        return _active[-1] if _active else None


def knowledge_search(kb: str, query: str, top_k: int | str | None = None) -> dict[str, Any]:
    """Search knowledge base ``kb`` for ``query``: ``{"matches": [{id, score, text, source,
    chunk_index}]}``, best first (``top_k`` defaults to the knowledge base's)."""
    bases = active()
    if bases is None:
        raise CompozyError(
            "knowledge_search: no knowledge bases are configured in this process; add them under "
            "knowledge.knowledge_bases in compozy.yaml"
        )
    if not isinstance(kb, str):
        raise ValidationError(f"knowledge_search: kb must be a knowledge base id, got {kb!r}")
    if isinstance(top_k, str) and top_k.strip().isdigit():
        top_k = int(top_k)  # a template renders text
    if top_k is not None and not isinstance(top_k, int):
        raise ValidationError(f"knowledge_search: top_k must be a whole number, got {top_k!r}")
    return {"matches": [match_json(m) for m in bases.query(kb, query, top_k=top_k)]}
