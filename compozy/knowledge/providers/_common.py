"""The one semantics of ``compozy.knowledge``, written once for every provider.

Validation (ids, vectors, metadata, ``top_k``, ``min_score``, ``where``), cosine scoring with
numpy, metadata matching with the JSON typing rule, the order of results, and the typed
encoding that lets providers whose filters compare strings (Qdrant, Redis) keep that rule.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from compozy.errors import StoreUnavailable, ValidationError
from compozy.knowledge import Match, Metadata, MetadataValue, Record

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatMatrix = npt.NDArray[np.float32]
    FloatVector = npt.NDArray[np.float32]

__all__ = [
    "check_min_score",
    "check_query",
    "check_records",
    "check_top_k",
    "check_where",
    "cosine_top",
    "matches_where",
    "ordered",
    "select",
    "top_with_ties",
    "translated",
    "typed_token",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{what} should be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise ValidationError(f"{what} holds a NUL character, which not every provider stores")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid Unicode text (a lone surrogate)") from None
    return value


def check_id(record_id: object) -> str:
    """A record id: a non-empty string of valid Unicode text."""
    text = _text(record_id, "a record id")
    if not text:
        raise ValidationError("a record id should not be empty")
    return text


def check_ids(ids: Sequence[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValidationError("ids should be a list of ids, not one string")
    return [check_id(record_id) for record_id in ids]


def check_value(key: object, value: object, what: str) -> MetadataValue:
    """One metadata value: a string, a finite number of at most 64 bits, or a boolean."""
    name = _text(key, f"a {what} key")
    if isinstance(value, bool | str):
        if isinstance(value, str):
            _text(value, f"{what} {name!r}")
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValidationError(
                f"{what} {name!r} is {value}, outside the 64-bit integers every provider stores"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{what} {name!r} is {value}: JSON has no such number")
        return value
    raise ValidationError(
        f"{what} {name!r} is a {type(value).__name__}; metadata values are strings, numbers "
        "and booleans only"
    )


def check_metadata(metadata: Mapping[str, Any], what: str = "metadata") -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise ValidationError(f"{what} should be a mapping, not {type(metadata).__name__}")
    return {key: check_value(key, value, what) for key, value in metadata.items()}


def check_where(where: Metadata | None) -> dict[str, MetadataValue] | None:
    """The filter, or None when there is none (an empty mapping is no filter)."""
    if where is None:
        return None
    checked = check_metadata(where, "where")
    return checked or None


def _check_vector(vector: Sequence[float], dimension: int, what: str) -> FloatVector:
    import numpy as np

    try:
        values = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} should be a sequence of numbers") from None
    got = values.shape[0] if values.ndim == 1 else None
    if got != dimension:
        raise ValidationError(
            f"{what} has dimension {got}, but this store's dimension is {dimension} "
            f"(expected {dimension}, got {got})"
        )
    if not np.isfinite(values).all():
        raise ValidationError(f"{what} holds a number that is not finite in 32 bits")
    if not values.any():
        raise ValidationError(f"{what} is all zeros: its cosine similarity is undefined")
    return values


def check_query(vector: Sequence[float], dimension: int) -> FloatVector:
    """The query vector, checked like a record's (float32)."""
    return _check_vector(vector, dimension, "the query vector")


def check_records(records: Sequence[Record], dimension: int) -> tuple[list[Record], FloatMatrix]:
    """Every record checked before anything is written; for a repeated id, the last one. The
    records come back with their vectors as the rows of one float32 matrix."""
    import numpy as np

    if isinstance(records, Record):
        raise ValidationError("upsert takes a list of records, not one record")
    checked: dict[str, tuple[Record, FloatVector]] = {}
    for record in records:
        if not isinstance(record, Record):
            raise ValidationError(f"upsert takes Record objects, not {type(record).__name__}")
        record_id = check_id(record.id)
        vector = _check_vector(record.vector, dimension, f"record {record_id!r}")
        text = _text(record.text, f"the text of record {record_id!r}")
        metadata = check_metadata(record.metadata, f"record {record_id!r}: metadata")
        checked.pop(record_id, None)  # a repeated id: the last one, in the last one's place
        as_sequence = cast(Sequence[float], vector)
        checked[record_id] = (Record(record_id, as_sequence, text, metadata), vector)
    rows = [vector for _, vector in checked.values()]
    matrix = np.stack(rows) if rows else np.zeros((0, dimension), dtype=np.float32)
    return [record for record, _ in checked.values()], matrix


def check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValidationError(f"top_k should be an integer of at least 1, not {top_k!r}")
    return top_k


def check_min_score(min_score: float | None) -> float | None:
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, int | float):
        raise ValidationError(f"min_score should be a number, not {min_score!r}")
    if not -1.0 <= min_score <= 1.0:
        raise ValidationError(
            f"min_score should be a cosine similarity between -1 and 1, not {min_score!r}"
        )
    return float(min_score)


def check_search(
    vector: Sequence[float], dimension: int, top_k: int, min_score: float | None
) -> tuple[FloatVector, int, float | None]:
    return check_query(vector, dimension), check_top_k(top_k), check_min_score(min_score)


def check_delete(
    ids: Sequence[str] | None, where: Metadata | None
) -> tuple[list[str] | None, dict[str, MetadataValue] | None]:
    checked_where = check_where(where)
    if ids is None and checked_where is None:
        raise ValidationError(
            "delete needs ids, a where filter or both; to empty a store, delete its ids"
        )
    return (None if ids is None else check_ids(ids)), checked_where


# The JSON typing rule: a filter value matches a stored value of the same JSON type and value.
def _same(stored: object, wanted: MetadataValue) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored == wanted
    if isinstance(wanted, str) or isinstance(stored, str):
        return isinstance(wanted, str) and isinstance(stored, str) and stored == wanted
    return isinstance(stored, int | float) and stored == wanted


def matches_where(metadata: Mapping[str, Any], where: Mapping[str, MetadataValue] | None) -> bool:
    """Whether ``metadata`` has every key of ``where`` with a value of the same JSON type and
    value (``1`` matches ``1.0``; ``"1"`` and ``True`` do not match ``1``)."""
    if not where:
        return True
    return all(key in metadata and _same(metadata[key], value) for key, value in where.items())


def typed_token(value: MetadataValue) -> str:
    """A string that two metadata values share exactly when they match under the typing rule:
    the JSON type's letter, then the value (numbers in one canonical form, so 1 and 1.0 agree).
    Providers whose filters compare strings store and query these."""
    if isinstance(value, bool):
        return "b:true" if value else "b:false"
    if isinstance(value, str):
        return "s:" + value
    if isinstance(value, float) and value.is_integer():
        return f"n:{int(value)}"
    return f"n:{value!r}"


def ordered(matches: Sequence[Match]) -> list[Match]:
    """By score descending, then id ascending (code point order)."""
    return sorted(matches, key=lambda match: (-match.score, match.id))


def select(matches: Sequence[Match], top_k: int, min_score: float | None) -> list[Match]:
    """The first ``top_k`` of the ordered matches scoring at least ``min_score``."""
    kept = [m for m in matches if min_score is None or m.score >= min_score]
    return ordered(kept)[:top_k]


def clamp(score: float) -> float:
    """A cosine similarity computed in float32 can stray past +-1 by a rounding error."""
    return max(-1.0, min(1.0, float(score)))


def top_with_ties(fetch: Callable[[int], list[Match]], top_k: int) -> list[Match]:
    """``top_k`` matches from a provider that returns its best ``n`` in an order of its own:
    ask for more until the ``top_k``-th score is not shared past the end of what came back, so
    that ties at the boundary are broken by id, not by the provider's order."""
    want = top_k
    while True:
        got = ordered(fetch(want))
        if len(got) < want or got[top_k - 1].score > got[-1].score:
            return got[:top_k]
        want *= 2


def cosine_top(
    normed: FloatMatrix, query: FloatVector, candidates: Any, top_k: int, ids: Sequence[str]
) -> list[tuple[int, float]]:
    """Rows of ``normed`` (unit vectors) among ``candidates`` (an index array or None for all)
    most similar to ``query``: (row, cosine) by cosine descending then id, ties at the
    boundary included before the cut."""
    import numpy as np

    q = np.asarray(query, dtype=np.float32)
    q = q / np.linalg.norm(q)
    rows = np.arange(normed.shape[0]) if candidates is None else np.asarray(candidates)
    if rows.size == 0:
        return []
    # np.dot, not @: matmul of a float32 matrix by a vector skips BLAS here (1000x slower).
    scores = np.dot(normed[rows] if candidates is not None else normed, q)
    if top_k < rows.size:
        part = np.argpartition(-scores, top_k - 1)[:top_k]
        kth = scores[part].min()
        # Every row tied with the k-th score competes on its id.
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(rows.size)
    found = [(int(rows[i]), clamp(float(scores[i]))) for i in part]
    found.sort(key=lambda row_score: (-row_score[1], ids[row_score[0]]))
    return found[:top_k]


@contextlib.contextmanager
def translated(
    provider: str, store: str, errors: tuple[type[BaseException], ...], advice: str
) -> Iterator[None]:
    """Turn a client library's exceptions into ``StoreUnavailable`` naming the provider, the
    store and what to do."""
    try:
        yield
    except errors as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(
            f"{provider} vector store {store}: {detail} ({type(exc).__name__}); {advice}"
        ) from exc
