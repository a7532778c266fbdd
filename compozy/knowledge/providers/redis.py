"""The Redis vector store, through redis-py on Redis 8 vector sets (one key per collection).

- A record is a member of the vector set (its id, UTF-8), added with ``VADD ... FP32 <vector>
  <id> NOQUANT SETATTR <json>`` (no quantization, so scores are exact cosines); an overwrite is
  ``VREM`` then ``VADD`` in one MULTI/EXEC.
- ``VSIM`` scores are (1 + cos) / 2; the store returns ``2 * score - 1``, the cosine. It runs
  with ``TRUTH`` (an exact scan, not the approximate graph) and ``FILTER-EF 0`` (no limit on
  the filtering effort), so results are the true top_k.
- The attribute JSON holds ``text``, ``metadata`` and, for filters, ``w_<hex of the key>``: the
  hex of the value's typed token (``"n:1"``, ``"s:1"``, ``"b:true"``, see
  ``_common.typed_token``). A FILTER expression is then only selectors and string literals of
  ``[0-9a-f_]``: no metadata key or value can inject anything into it, and the JSON typing rule
  holds (Redis's own comparisons take ``true`` for ``1``).
- ``count(where)`` and ``delete(where=...)`` list the members that match with the same VSIM.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis
import redis.exceptions

from compozy.errors import CompozyError, ConfigError, StoreUnavailable
from compozy.knowledge import Match, Metadata, MetadataValue, Record
from compozy.knowledge.providers import _common

if TYPE_CHECKING:
    from compozy.config import VectorDBConfig
    from compozy.knowledge.providers._common import FloatVector

__all__ = ["RedisVectorStore", "filter_expression", "open_store"]

_ERRORS: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
_ADVICE = "check that Redis (8 or later, for vector sets) answers at the vector DB's url"


def open_store(config: VectorDBConfig) -> RedisVectorStore:
    """The store of a ``provider: redis`` vector DB (``url``, ``collection`` is the key)."""
    if not config.url:
        raise ConfigError(f"knowledge.vector_dbs ({config.id}): redis needs url; set it.")
    client = redis.Redis.from_url(config.url, socket_timeout=10, socket_connect_timeout=10)
    return RedisVectorStore(
        config.collection or f"compozy_{config.id}", config.dimension, client, owns_client=True
    )


def _run(target: Any, *args: Any) -> Any:
    """One command on a client or a pipeline (redis-py leaves execute_command untyped)."""
    return target.execute_command(*args)


def _field(key: str) -> str:
    return "w_" + key.encode("utf-8").hex()


def _literal(value: MetadataValue) -> str:
    return '"' + _common.typed_token(value).encode("utf-8").hex() + '"'


def filter_expression(where: Mapping[str, MetadataValue]) -> str:
    """The VSIM FILTER expression of ``where``: ``.w_<hex key> == "<hex token>" && ...``."""
    return " && ".join(f".{_field(key)} == {_literal(value)}" for key, value in where.items())


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _scores(reply: Any) -> list[tuple[str, float]]:
    """VSIM WITHSCORES: a map (RESP3) or a flat list of member, score (RESP2)."""
    if isinstance(reply, dict):
        return [(_text(member), float(score)) for member, score in reply.items()]
    return [(_text(reply[i]), float(reply[i + 1])) for i in range(0, len(reply), 2)]


class RedisVectorStore:
    """A vector store in one Redis vector set (see the module's docstring)."""

    provider = "redis"

    def __init__(
        self, key: str, dimension: int, client: redis.Redis, *, owns_client: bool = False
    ) -> None:
        self._key = key
        self._dimension = dimension
        self._client: redis.Redis | None = client
        self._owns_client = owns_client
        try:
            self._check_set()
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _calls(self) -> Iterator[redis.Redis]:
        with _common.translated(self.provider, f"key {self._key!r}", _ERRORS, _ADVICE):
            if self._client is None:
                raise CompozyError(f"redis vector store {self._key!r} is closed")
            yield self._client

    def _check_set(self) -> None:
        with self._calls() as client:
            try:
                card = _run(client, "VCARD", self._key)
            except redis.exceptions.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                raise StoreUnavailable(
                    f"redis vector store key {self._key!r}: this Redis has no vector sets "
                    f"({exc}); compozy needs Redis 8 or later"
                ) from exc
            stored = int(_run(client, "VDIM", self._key)) if card else None
        if stored is not None and stored != self._dimension:
            raise ConfigError(
                f"redis vector set {self._key!r} holds vectors of dimension {stored}, but it "
                f"was opened with dimension {self._dimension} (expected {self._dimension}, got "
                f"{stored}); set the vector DB's dimension to {stored}, or give it another "
                "collection (and ingest again)"
            )

    @staticmethod
    def _blob(vector: FloatVector) -> bytes:
        return vector.astype("<f4").tobytes()

    @staticmethod
    def _attributes(record: Record) -> str:
        body: dict[str, Any] = {"text": record.text, "metadata": dict(record.metadata)}
        for key, value in record.metadata.items():
            body[_field(key)] = _common.typed_token(value).encode("utf-8").hex()
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @staticmethod
    def _decode(attributes: bytes | str | None) -> tuple[str, dict[str, Any]]:
        body = json.loads(attributes) if attributes else {}
        return body.get("text", ""), dict(body.get("metadata", {}))

    def _similar(
        self, query: FloatVector, count: int, where: Mapping[str, MetadataValue] | None
    ) -> list[tuple[str, float]]:
        """The ``count`` members most similar to ``query`` that match ``where``, with their
        VSIM scores ((1 + cos) / 2)."""
        if count <= 0:
            return []
        args: list[Any] = ["VSIM", self._key, "FP32", self._blob(query), "WITHSCORES"]
        args += ["COUNT", count, "TRUTH"]
        if where:
            args += ["FILTER", filter_expression(where), "FILTER-EF", 0]
        with self._calls() as client:
            return _scores(_run(client, *args))

    def _card(self) -> int:
        with self._calls() as client:
            return int(_run(client, "VCARD", self._key))

    def _members(self, where: Mapping[str, MetadataValue]) -> list[str]:
        import numpy as np

        probe = np.zeros(self._dimension, dtype=np.float32)
        probe[0] = 1.0  # any vector: every member comes back
        return [member for member, _ in self._similar(probe, self._card(), where)]

    def _attributes_of(self, ids: Sequence[str]) -> list[Any]:
        with self._calls() as client:
            pipe = client.pipeline(transaction=False)
            for record_id in ids:
                _run(pipe, "VGETATTR", self._key, record_id)
            return list(pipe.execute())

    # -- the protocol --------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def upsert(self, records: Sequence[Record]) -> None:
        checked, vectors = _common.check_records(records, self._dimension)
        if not checked:
            return
        with self._calls() as client:
            pipe = client.pipeline(transaction=True)
            for row, record in enumerate(checked):
                _run(pipe, "VREM", self._key, record.id)
                blob, attributes = self._blob(vectors[row]), self._attributes(record)
                args = ("FP32", blob, record.id, "NOQUANT", "SETATTR", attributes)
                _run(pipe, "VADD", self._key, *args)
            pipe.execute()

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        min_score: float | None = None,
        where: Metadata | None = None,
    ) -> list[Match]:
        query, top_k, min_score = _common.check_search(vector, self._dimension, top_k, min_score)
        checked_where = _common.check_where(where)

        def fetch(count: int) -> list[Match]:
            scored = self._similar(query, count, checked_where)
            attributes = self._attributes_of([member for member, _ in scored])
            matches = []
            for (member, score), attribute in zip(scored, attributes, strict=True):
                text, metadata = self._decode(attribute)
                matches.append(Match(member, _common.clamp(2.0 * score - 1.0), text, metadata))
            return matches

        return _common.select(_common.top_with_ties(fetch, top_k), top_k, min_score)

    def get(self, ids: Sequence[str]) -> list[Record]:
        wanted = _common.check_ids(ids)
        if not wanted:
            return []
        with self._calls() as client:
            pipe = client.pipeline(transaction=True)
            for record_id in wanted:
                _run(pipe, "VEMB", self._key, record_id)
                _run(pipe, "VGETATTR", self._key, record_id)
            replies = pipe.execute()
        records = []
        for index, record_id in enumerate(wanted):
            vector, attributes = replies[2 * index], replies[2 * index + 1]
            if vector:
                text, metadata = self._decode(attributes)
                records.append(Record(record_id, [float(v) for v in vector], text, metadata))
        return records

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        wanted, checked_where = _common.check_delete(ids, where)
        if wanted is None:
            assert checked_where is not None
            doomed = self._members(checked_where)
        elif checked_where is None:
            doomed = wanted
        else:
            unique = list(dict.fromkeys(wanted))
            doomed = [
                record_id
                for record_id, attributes in zip(unique, self._attributes_of(unique), strict=True)
                if attributes is not None
                and _common.matches_where(self._decode(attributes)[1], checked_where)
            ]
        if not doomed:
            return
        with self._calls() as client:
            pipe = client.pipeline(transaction=True)
            for record_id in doomed:
                _run(pipe, "VREM", self._key, record_id)
            pipe.execute()

    def count(self, where: Metadata | None = None) -> int:
        checked_where = _common.check_where(where)
        if checked_where is None:
            return self._card()
        return len(self._members(checked_where))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            with contextlib.suppress(*_ERRORS):
                client.close()

    def __repr__(self) -> str:
        return f"RedisVectorStore({self._key!r}, dimension={self._dimension})"
