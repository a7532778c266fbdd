"""Embedders: turn texts into vectors of a fixed dimension.

- ``hashing``: deterministic and offline. Signed feature hashing (as scikit-learn's
  ``HashingVectorizer``, each term into two buckets) of word unigrams and bigrams, with English
  stop words left out, a light suffix stemmer and sublinear term frequency, L2-normalised.
  Lexical, not semantic: a query finds the chunks that share its words. The default, and what
  the tests use.
- ``openai``: any OpenAI-compatible ``POST {base_url}/embeddings`` endpoint; the key is read
  from the environment variable named by ``api_key_env``.
- ``sentence-transformers``: a local model, from the optional extra
  ``pip install 'compozy[local-embeddings]'``.

Every embedder sends its texts in batches of ``batch_size``; with ``cache: true`` the vectors of
texts it embedded before are kept in memory (an LRU of ``CACHE_ENTRIES`` keyed by
sha256(text), per process).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from compozy.errors import CompozyError, ValidationError

if TYPE_CHECKING:
    from compozy.config import EmbedderConfig

__all__ = [
    "CACHE_ENTRIES",
    "Embedder",
    "EmbedderUnavailable",
    "HashingEmbedder",
    "open_embedder",
]

CACHE_ENTRIES: Final = 10_000
"""How many vectors an embedder with ``cache: true`` keeps (least recently used go first)."""

_HTTP_TIMEOUT: Final = 30.0
_EXTRA_HINT: Final = "pip install 'compozy[local-embeddings]'"


class EmbedderUnavailable(CompozyError):
    """An embedder cannot embed now: its endpoint failed or answered an error, or its package
    is not installed."""


class Embedder(Protocol):
    """Texts in, one vector of ``dimension`` floats per text out, in order."""

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def close(self) -> None: ...


def open_embedder(config: EmbedderConfig, *, environ: Mapping[str, str] | None = None) -> Embedder:
    """The embedder ``config`` describes (batched, and cached if ``config.cache``)."""
    inner: _Batched
    if config.provider == "openai":
        inner = _OpenAI(config, os.environ if environ is None else environ)
    elif config.provider == "sentence-transformers":
        inner = _SentenceTransformers(config)
    else:
        inner = HashingEmbedder(config.dimension, batch_size=config.batch_size)
    return _Cached(inner) if config.cache else inner


class _Batched:
    """Splits ``embed`` into calls of ``_embed_batch`` of at most ``batch_size`` texts and
    checks what comes back."""

    def __init__(self, name: str, dimension: int, batch_size: int) -> None:
        self.name = name
        self._dimension = dimension
        self._batch_size = batch_size

    @property
    def dimension(self) -> int:
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = list(texts[start : start + self._batch_size])
            got = self._embed_batch(batch)
            if len(got) != len(batch):
                raise EmbedderUnavailable(
                    f"{self.name} returned {len(got)} vectors for {len(batch)} texts"
                )
            for vector in got:
                if len(vector) != self._dimension:
                    raise ValidationError(
                        f"{self.name} returned vectors of dimension {len(vector)}, but its "
                        f"configured dimension is {self._dimension}; set dimension: "
                        f"{len(vector)} on the embedder and its vector DB"
                    )
            vectors.extend(got)
        return vectors

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""


# --- hashing -----------------------------------------------------------------------------------

_WORD: Final = re.compile(r"[^\W_]+")
_STOP_WORDS_TEXT: Final = """
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself
yourselves"""
_STOP_WORDS: Final = frozenset(_STOP_WORDS_TEXT.split())
_SUFFIXES: Final = ("ing", "ed", "es", "s")


@functools.lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    """A light stemmer: ``moving``, ``moved``, ``moves`` and ``move`` all give ``mov``."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


_PROBES: Final = 2


@functools.lru_cache(maxsize=262_144)
def _feature_hashes(feature: str) -> tuple[int, ...]:
    """``_PROBES`` independent 64-bit hashes of a feature."""
    digest = hashlib.blake2b(feature.encode(), digest_size=8 * _PROBES).digest()
    return tuple(int.from_bytes(digest[i * 8 : i * 8 + 8], "big") for i in range(_PROBES))


def _terms(text: str) -> Counter[str]:
    """Stemmed words that are not stop words, and the bigrams of neighbours among them."""
    words = [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS]
    terms = Counter(words)
    terms.update(f"{left} {right}" for left, right in itertools.pairwise(words))
    return terms


class HashingEmbedder(_Batched):
    """Feature hashing of word unigrams and bigrams into ``dimension`` signed buckets."""

    def __init__(self, dimension: int, *, batch_size: int = 64) -> None:
        super().__init__("the hashing embedder", dimension, batch_size)

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        matrix = np.zeros((len(texts), self._dimension), dtype=np.float64)
        for row, text in enumerate(texts):
            # A text without a single word still gets a (fixed) unit vector, never zeros.
            terms = _terms(text) or Counter({"\0empty": 1})
            for term, count in terms.items():
                # Sublinear term frequency: the tenth "data" adds less than the first.
                weight = (1.0 + math.log(count)) / math.sqrt(_PROBES)
                # Each term goes to two buckets: two terms that collide in one with opposite
                # signs (and cancel out there) still count in the other.
                for hashed in _feature_hashes(term):
                    sign = 1.0 if hashed >> 63 else -1.0
                    matrix[row, hashed % self._dimension] += sign * weight
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0  # opposite signs cancelled out exactly: rare, left as zeros
        return (matrix / norms).tolist()  # type: ignore[no-any-return]


# --- OpenAI-compatible HTTP ----------------------------------------------------------------------


class _OpenAI(_Batched):
    """``POST {base_url}/embeddings`` with ``{"model", "input": [texts]}``."""

    def __init__(self, config: EmbedderConfig, environ: Mapping[str, str]) -> None:
        super().__init__(f"embedder {config.id!r}", config.dimension, config.batch_size)
        try:
            import httpx
        except ImportError:  # pragma: no cover - httpx comes with the API's test client
            raise EmbedderUnavailable(
                f"embedder {config.id!r} needs httpx, which is not installed; pip install httpx"
            ) from None
        assert config.base_url is not None  # the config sets them
        assert config.model is not None
        self._url = config.base_url.rstrip("/") + "/embeddings"
        self._model = config.model
        headers = {}
        if config.api_key_env is not None:
            key = environ.get(config.api_key_env)
            if not key:
                raise EmbedderUnavailable(
                    f"embedder {config.id!r}: the environment variable {config.api_key_env} "
                    "(its api_key_env) is not set; set it to the API key"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._client = httpx.Client(headers=headers, timeout=_HTTP_TIMEOUT)

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        httpx = self._httpx
        try:
            response = self._client.post(self._url, json={"model": self._model, "input": texts})
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(
                f"{self.name}: POST {self._url} failed ({type(exc).__name__}: {exc})"
            ) from None
        if response.status_code >= 400:
            raise EmbedderUnavailable(
                f"{self.name}: POST {self._url} answered {response.status_code}"
                f"{_error_detail(response)}"
            )
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda item: item["index"])
            return [[float(x) for x in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderUnavailable(
                f"{self.name}: POST {self._url} answered {response.status_code} without a list "
                f"of embeddings under 'data' ({type(exc).__name__}: {exc})"
            ) from None

    def close(self) -> None:
        self._client.close()


def _error_detail(response: Any) -> str:
    """``: <the server's error message>``, shortened, or nothing."""
    try:
        body = response.json()
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.text
    text = " ".join(str(message).split())[:300]
    return f": {text}" if text else ""


# --- sentence-transformers -----------------------------------------------------------------------


class _SentenceTransformers(_Batched):
    """A local sentence-transformers model (``model``: a name or a folder)."""

    def __init__(self, config: EmbedderConfig) -> None:
        super().__init__(f"embedder {config.id!r}", config.dimension, config.batch_size)
        try:
            module = importlib.import_module("sentence_transformers")
        except ImportError:
            raise EmbedderUnavailable(
                f"embedder {config.id!r} uses sentence-transformers, which is not installed; "
                f"{_EXTRA_HINT}"
            ) from None
        try:
            self._model = module.SentenceTransformer(config.model)
        except Exception as exc:  # noqa: BLE001 - a missing model, no network: anything
            raise EmbedderUnavailable(
                f"embedder {config.id!r}: cannot load the sentence-transformers model "
                f"{config.model!r} ({type(exc).__name__}: {exc})"
            ) from None

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, batch_size=len(texts), normalize_embeddings=True)
        return [[float(x) for x in vector] for vector in vectors]


# --- cache ---------------------------------------------------------------------------------------


class _Cached:
    """Keeps the vectors of the last ``CACHE_ENTRIES`` texts, keyed by sha256(text)."""

    def __init__(self, inner: _Batched) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._vectors: OrderedDict[bytes, list[float]] = OrderedDict()

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [hashlib.sha256(text.encode()).digest() for text in texts]
        found: dict[bytes, list[float]] = {}
        with self._lock:
            for key in keys:
                if key in self._vectors:
                    self._vectors.move_to_end(key)
                    found[key] = self._vectors[key]
        missing = {key: text for key, text in zip(keys, texts, strict=True) if key not in found}
        if missing:
            fresh = self._inner.embed(list(missing.values()))
            found.update(zip(missing, fresh, strict=True))
            with self._lock:
                for key in missing:
                    self._vectors[key] = found[key]
                    self._vectors.move_to_end(key)
                while len(self._vectors) > CACHE_ENTRIES:
                    self._vectors.popitem(last=False)
        return [list(found[key]) for key in keys]

    @property
    def cached(self) -> int:
        """How many vectors are kept now."""
        return len(self._vectors)

    def close(self) -> None:
        self._inner.close()
