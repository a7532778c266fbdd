"""Embedders: hashing (offline), an OpenAI-compatible endpoint (a real local HTTP server),
sentence-transformers (an optional extra), batching and the cache."""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from compozy.config import EmbedderConfig
from compozy.errors import ValidationError
from compozy.knowledge.embedders import EmbedderUnavailable, HashingEmbedder, open_embedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- hashing -------------------------------------------------------------------------------------


def test_hashing_is_deterministic_normalised_and_of_the_dimension() -> None:
    texts = ["Moving data to PostgreSQL", "", "the of and"]

    first = HashingEmbedder(64).embed(texts)
    again = HashingEmbedder(64).embed(texts)

    assert first == again
    for vector in first:
        assert len(vector) == 64
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0)


def test_hashing_ranks_by_shared_words_stems_and_phrases() -> None:
    embedder = HashingEmbedder(1024)
    query, moving, weather = embedder.embed(
        [
            "how do I move data to PostgreSQL",
            "Moving your data: export from SQLite, import into PostgreSQL.",
            "The weather service sends forecasts every hour.",
        ]
    )

    # "move"/"moving" share a stem; stop words ("how", "do", "to") count for nothing.
    assert cosine(query, moving) > 0.3
    assert cosine(query, moving) > cosine(query, weather) + 0.2
    only_stop_words = embedder.embed(["how do I do it to them"])[0]
    assert cosine(only_stop_words, moving) == pytest.approx(0.0, abs=0.2)


def test_hashing_batches_do_not_change_vectors() -> None:
    texts = [f"text number {i} about topic {i % 3}" for i in range(10)]
    config = EmbedderConfig(id="h", dimension=32, batch_size=3)

    assert open_embedder(config).embed(texts) == HashingEmbedder(32).embed(texts)


# --- an OpenAI-compatible endpoint ---------------------------------------------------------------


@dataclass
class FakeEmbeddingsServer:
    """A real HTTP server that answers POST /v1/embeddings like OpenAI (vectors from the
    hashing embedder) and records each request."""

    status: int = 200
    dimension: int = 8
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def endpoint() -> Iterator[FakeEmbeddingsServer]:
    state = FakeEmbeddingsServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(
                {"path": self.path, "auth": self.headers["Authorization"], **body}
            )
            if state.status != 200:
                answer: dict[str, Any] = {"error": {"message": "Incorrect API key provided"}}
            else:
                vectors = HashingEmbedder(state.dimension).embed(body["input"])
                # Out of order on purpose: clients must sort by index.
                data = [{"index": i, "embedding": v} for i, v in enumerate(vectors)]
                answer = {"data": data[::-1], "model": body["model"]}
            payload = json.dumps(answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def openai_config(url: str, **options: Any) -> EmbedderConfig:
    fields = {"id": "oa", "provider": "openai", "model": "tiny", "dimension": 8, "base_url": url}
    return EmbedderConfig(**(fields | options))


def test_openai_endpoint_batches_sends_the_key_and_keeps_the_order(
    endpoint: FakeEmbeddingsServer,
) -> None:
    config = openai_config(endpoint.url, batch_size=2, api_key_env="TEST_EMBED_KEY")
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]

    embedder = open_embedder(config, environ={"TEST_EMBED_KEY": "k-123"})
    vectors = embedder.embed(texts)
    embedder.close()

    assert vectors == HashingEmbedder(8).embed(texts)
    assert [r["input"] for r in endpoint.requests] == [
        ["alpha", "beta"],
        ["gamma", "delta"],
        ["epsilon"],
    ]
    assert {r["path"] for r in endpoint.requests} == {"/v1/embeddings"}
    assert {r["model"] for r in endpoint.requests} == {"tiny"}
    assert {r["auth"] for r in endpoint.requests} == {"Bearer k-123"}


def test_openai_error_names_the_endpoint_and_status(endpoint: FakeEmbeddingsServer) -> None:
    endpoint.status = 401
    embedder = open_embedder(openai_config(endpoint.url))

    with pytest.raises(EmbedderUnavailable) as info:
        embedder.embed(["alpha"])

    message = str(info.value)
    assert f"POST {endpoint.url}/embeddings answered 401" in message
    assert "Incorrect API key provided" in message


def test_openai_wrong_dimension_says_what_to_set(endpoint: FakeEmbeddingsServer) -> None:
    endpoint.dimension = 12

    with pytest.raises(ValidationError, match="dimension 12, but its configured dimension is 8"):
        open_embedder(openai_config(endpoint.url)).embed(["alpha"])


def test_openai_unreachable_and_missing_key_are_one_sentence_each() -> None:
    closed = openai_config("http://127.0.0.1:9/v1")  # the discard port: nothing listens
    with pytest.raises(EmbedderUnavailable, match=r"POST http://127.0.0.1:9/v1/embeddings failed"):
        open_embedder(closed).embed(["alpha"])

    keyed = openai_config("http://127.0.0.1:9/v1", api_key_env="NOT_SET_ANYWHERE")
    with pytest.raises(EmbedderUnavailable, match=r"NOT_SET_ANYWHERE .* is not set"):
        open_embedder(keyed, environ={})


def test_the_cache_embeds_each_text_once(endpoint: FakeEmbeddingsServer) -> None:
    embedder = open_embedder(openai_config(endpoint.url, cache=True))

    first = embedder.embed(["alpha", "beta"])
    second = embedder.embed(["beta", "gamma", "alpha"])

    assert second == [first[1], HashingEmbedder(8).embed(["gamma"])[0], first[0]]
    assert [r["input"] for r in endpoint.requests] == [["alpha", "beta"], ["gamma"]]


# --- sentence-transformers -----------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed here",
)
def test_sentence_transformers_missing_says_which_extra_to_install() -> None:
    config = EmbedderConfig(id="st", provider="sentence-transformers", model="m", dimension=4)

    with pytest.raises(EmbedderUnavailable) as info:
        open_embedder(config)

    assert "pip install 'compozy[local-embeddings]'" in str(info.value)
    assert "\n" not in str(info.value)
