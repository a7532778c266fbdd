"""The Qdrant vector store, through qdrant-client: a server (``url``) or local mode (``path``:
a directory, or ``:memory:``).

- Qdrant takes only UUIDs or integers as point ids: a record's id is mapped with uuid5 (a fixed
  namespace), and the original is kept in the payload (``_id``) and returned verbatim.
- The collection uses the Cosine distance, whose score is the cosine similarity; Qdrant keeps
  unit vectors, so the record's norm is kept in the payload (``_norm``) for ``get``.
- Filters are ``must`` conditions on typed tokens (``_w_<hex of the key>``: ``"n:1"``,
  ``"s:1"``, ``"b:true"``, see ``_common.typed_token``), not on the raw values: Qdrant's own
  match would take ``True`` for ``1`` in local mode and has no float match.
- ``delete(ids, where=...)`` is one filter: ``has_id`` AND the conditions.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException, ResponseHandlingException

from compozy.errors import CompozyError, ConfigError
from compozy.knowledge import Match, Metadata, MetadataValue, Record
from compozy.knowledge.providers import _common

if TYPE_CHECKING:
    from compozy.config import VectorDBConfig

__all__ = ["QdrantVectorStore", "open_store", "point_id"]

NAMESPACE = uuid.UUID("6f1e4f0a-8c47-5b8e-9d3b-2c5a0e7d4b11")
"""The uuid5 namespace of compozy's record ids in Qdrant (fixed: changing it orphans points)."""
ID, TEXT, METADATA, NORM, WHERE = "_id", "_text", "_metadata", "_norm", "_w_"
_ERRORS: tuple[type[BaseException], ...] = (
    ApiException,
    ResponseHandlingException,
    httpx.HTTPError,
    RuntimeError,  # local mode: "Storage folder ... is already accessed by another instance"
    OSError,
    ValueError,
)
_ADVICE = (
    "check that the Qdrant server answers at url (and the API key), or that no other process "
    "has the local-mode path open (local mode is one process only: use a server to share it)"
)


def point_id(record_id: str) -> str:
    """The Qdrant point id of a record id."""
    return str(uuid.uuid5(NAMESPACE, record_id))


def _field(key: str) -> str:
    return WHERE + key.encode("utf-8").hex()


def open_store(config: VectorDBConfig) -> QdrantVectorStore:
    """The store of a ``provider: qdrant`` vector DB."""
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise ConfigError(
                f"knowledge.vector_dbs ({config.id}): api_key_env names {config.api_key_env}, "
                "which is not set; export it with the Qdrant API key"
            )
    return QdrantVectorStore(
        config.collection or f"compozy_{config.id}",
        config.dimension,
        url=config.url,
        path=config.path,
        api_key=api_key,
    )


class QdrantVectorStore:
    """A vector store in one Qdrant collection (see the module's docstring)."""

    provider = "qdrant"

    def __init__(
        self,
        collection: str,
        dimension: int,
        *,
        url: str | None = None,
        path: str | None = None,
        api_key: str | None = None,
        client: QdrantClient | None = None,
    ) -> None:
        self._collection = collection
        self._dimension = dimension
        self._where = url or path or "(client)"
        # Local mode is not meant for several threads at once; a server is, but the cost of
        # taking turns in one process is small next to a round trip.
        self._mutex = threading.RLock()
        self._client: QdrantClient | None = None
        with self._translated():
            if client is not None:
                self._client = client
            elif url:
                self._client = QdrantClient(
                    url=url, api_key=api_key, timeout=10, check_compatibility=False
                )
            elif path == ":memory:":
                self._client = QdrantClient(location=":memory:")
            elif path:
                self._client = QdrantClient(path=path)
            else:
                raise ConfigError("a qdrant vector store needs url or path")
        try:
            self._open_collection()
        except BaseException:
            self.close()
            raise

    def _translated(self) -> contextlib.AbstractContextManager[None]:
        store = f"{self._where} collection {self._collection!r}"
        return _common.translated(self.provider, store, _ERRORS, _ADVICE)

    @contextlib.contextmanager
    def _calls(self) -> Iterator[QdrantClient]:
        with self._mutex, self._translated():
            if self._client is None:
                raise CompozyError(f"qdrant vector store {self._collection!r} is closed")
            yield self._client

    def _open_collection(self) -> None:
        with self._calls() as client:
            if not client.collection_exists(self._collection):
                client.create_collection(
                    self._collection,
                    vectors_config=models.VectorParams(
                        size=self._dimension, distance=models.Distance.COSINE
                    ),
                )
                return
            params = client.get_collection(self._collection).config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise ConfigError(
                f"qdrant collection {self._collection!r} has named vectors; compozy needs a "
                "collection with one unnamed vector: give the vector DB another collection"
            )
        if params.size != self._dimension:
            raise ConfigError(
                f"qdrant collection {self._collection!r} holds vectors of dimension "
                f"{params.size}, but it was opened with dimension {self._dimension} (expected "
                f"{self._dimension}, got {params.size}); set the vector DB's dimension to "
                f"{params.size}, or give it another collection (and ingest again)"
            )
        if params.distance != models.Distance.COSINE:
            raise ConfigError(
                f"qdrant collection {self._collection!r} uses the {params.distance.value} "
                "distance; compozy needs Cosine: give the vector DB another collection"
            )

    @staticmethod
    def _conditions(where: Mapping[str, MetadataValue] | None) -> list[models.Condition]:
        return [
            models.FieldCondition(
                key=_field(key), match=models.MatchValue(value=_common.typed_token(value))
            )
            for key, value in (where or {}).items()
        ]

    def _filter(
        self, where: Mapping[str, MetadataValue] | None, ids: Sequence[str] | None = None
    ) -> models.Filter | None:
        conditions = self._conditions(where)
        if ids is not None:
            conditions.append(models.HasIdCondition(has_id=[point_id(i) for i in ids]))
        return models.Filter(must=conditions) if conditions else None

    @staticmethod
    def _payload(record: Record, norm: float) -> dict[str, Any]:
        payload: dict[str, Any] = {
            ID: record.id,
            TEXT: record.text,
            METADATA: dict(record.metadata),
            NORM: norm,
        }
        for key, value in record.metadata.items():
            payload[_field(key)] = _common.typed_token(value)
        return payload

    @staticmethod
    def _match(point: models.ScoredPoint) -> Match:
        payload = point.payload or {}
        score = _common.clamp(point.score)
        return Match(payload[ID], score, payload.get(TEXT, ""), dict(payload.get(METADATA, {})))

    # -- the protocol --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def upsert(self, records: Sequence[Record]) -> None:
        import numpy as np

        checked, vectors = _common.check_records(records, self._dimension)
        if not checked:
            return
        norms = np.linalg.norm(vectors, axis=1)
        points = [
            models.PointStruct(
                id=point_id(record.id),
                vector=vectors[row].tolist(),
                payload=self._payload(record, float(norms[row])),
            )
            for row, record in enumerate(checked)
        ]
        with self._calls() as client:
            client.upsert(self._collection, points=points, wait=True)

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        min_score: float | None = None,
        where: Metadata | None = None,
    ) -> list[Match]:
        query, top_k, min_score = _common.check_search(vector, self._dimension, top_k, min_score)
        query_filter = self._filter(_common.check_where(where))
        query_list = query.tolist()

        def fetch(limit: int) -> list[Match]:
            with self._calls() as client:
                points = client.query_points(
                    self._collection,
                    query=query_list,
                    limit=limit,
                    query_filter=query_filter,
                    with_payload=True,
                ).points
            return [self._match(point) for point in points]

        found = _common.top_with_ties(fetch, top_k)
        return _common.select(found, top_k, min_score)

    def get(self, ids: Sequence[str]) -> list[Record]:
        wanted = _common.check_ids(ids)
        if not wanted:
            return []
        with self._calls() as client:
            points = client.retrieve(
                self._collection,
                ids=list(dict.fromkeys(point_id(i) for i in wanted)),
                with_payload=True,
                with_vectors=True,
            )
        by_id: dict[str, Record] = {}
        for point in points:
            payload = point.payload or {}
            vector = point.vector
            assert isinstance(vector, list)
            norm = float(payload.get(NORM, 1.0))
            by_id[payload[ID]] = Record(
                payload[ID],
                [float(v) * norm for v in vector],  # type: ignore[arg-type]
                payload.get(TEXT, ""),
                dict(payload.get(METADATA, {})),
            )
        return [by_id[i] for i in wanted if i in by_id]

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        wanted, checked_where = _common.check_delete(ids, where)
        if wanted is not None and not wanted:
            return
        delete_filter = self._filter(checked_where, wanted)
        assert delete_filter is not None  # ids, where or both: check_delete made sure
        selector = models.FilterSelector(filter=delete_filter)
        with self._calls() as client:
            client.delete(self._collection, points_selector=selector, wait=True)

    def count(self, where: Metadata | None = None) -> int:
        count_filter = self._filter(_common.check_where(where))
        with self._calls() as client:
            return client.count(self._collection, count_filter=count_filter, exact=True).count

    def close(self) -> None:
        with self._mutex:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(*_ERRORS):
                client.close()

    def __repr__(self) -> str:
        return f"QdrantVectorStore({self._collection!r}, dimension={self._dimension})"
