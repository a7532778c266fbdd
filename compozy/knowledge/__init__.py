"""Knowledge bases: vector stores behind one protocol, embedders, ingestion and retrieval.

One semantics on every provider (the ``VectorStoreContract`` in ``compozy_testkit.vectors``
holds each provider to it):

- ``score`` is the cosine similarity of the query and the record's vector, in [-1, 1],
  whatever the provider computes natively (Redis's (1+cos)/2 and distances are converted);
- ``min_score`` keeps the matches whose score is >= it;
- results come by score descending, then by id ascending (code point order);
- ``where`` filters on metadata by equality, with JSON typing: ``"1"`` does not match ``1``,
  ``True`` does not match ``1``; a record without the key does not match; metadata values are
  strings, numbers (int or float; ``1`` matches ``1.0``) and booleans only;
- ``delete(ids, where=...)`` deletes the records that are in ``ids`` AND match ``where``;
  deleting what is missing is no error;
- ids are non-empty strings that round-trip verbatim (a provider that only takes UUIDs or
  integers maps them and keeps the original);
- a vector of the wrong dimension is a ``ValidationError`` naming the record, expected and got.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

MetadataValue = str | int | float | bool
Metadata = Mapping[str, MetadataValue]

__all__ = ["Match", "Metadata", "MetadataValue", "Record", "VectorStore"]


@dataclass(frozen=True)
class Record:
    """One chunk: its id, its embedding, its text and metadata."""

    id: str
    vector: Sequence[float]
    text: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    """A search result: the record's id, text and metadata, and its cosine score."""

    id: str
    score: float
    text: str
    metadata: Mapping[str, MetadataValue]


@runtime_checkable
class VectorStore(Protocol):
    """A collection of records of one dimension."""

    @property
    def dimension(self) -> int:
        """The length every vector must have."""
        ...

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert the records, replacing any with the same id (all or none are checked before
        anything is written)."""
        ...

    def search(
        self,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        min_score: float | None = None,
        where: Metadata | None = None,
    ) -> list[Match]:
        """The ``top_k`` records most similar to ``vector`` (see the module's semantics)."""
        ...

    def get(self, ids: Sequence[str]) -> list[Record]:
        """The records with these ids, in the order asked; missing ids are left out."""
        ...

    def delete(self, ids: Sequence[str] | None = None, *, where: Metadata | None = None) -> None:
        """Delete the records in ``ids`` that match ``where`` (either may be omitted, not
        both)."""
        ...

    def count(self, where: Metadata | None = None) -> int:
        """How many records there are (that match ``where``)."""
        ...

    def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""
        ...
