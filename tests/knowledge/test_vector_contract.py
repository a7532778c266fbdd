"""The vector store contract on the filesystem, Qdrant (local mode, in memory and in a folder)
and Redis (fakeredis 2.40.0) providers.

A real Redis runs the contract in test_vector_contract_redis_server.py (REDIS_URL).
"""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from compozy.config import VectorDBConfig
from compozy.knowledge.providers import open_vector_store
from compozy.knowledge.providers.qdrant import QdrantVectorStore
from compozy.knowledge.providers.redis import RedisVectorStore
from compozy_testkit.vectors import VectorStoreContract, VectorStoreFactory


def _config(**fields: object) -> VectorDBConfig:
    return VectorDBConfig.model_validate({"id": "contract", **fields})


class TestFilesystem(VectorStoreContract):
    @pytest.fixture
    def vector_store_factory(self, tmp_path: Path) -> VectorStoreFactory:
        path = str(tmp_path / "kb")
        return lambda dimension: open_vector_store(
            _config(provider="filesystem", path=path, dimension=dimension)
        )


class TestQdrantInMemory(VectorStoreContract):
    persistent = False

    @pytest.fixture
    def vector_store_factory(self) -> VectorStoreFactory:
        return lambda dimension: open_vector_store(
            _config(provider="qdrant", path=":memory:", dimension=dimension)
        )


class TestQdrantLocalFolder(VectorStoreContract):
    @pytest.fixture
    def vector_store_factory(self, tmp_path: Path) -> VectorStoreFactory:
        path = str(tmp_path / "qdrant")
        return lambda dimension: QdrantVectorStore("contract", dimension, path=path)


class TestRedisFake(VectorStoreContract):
    """fakeredis 2.40.0 (pinned: 2.41 dropped vector sets); each test its own server, which
    outlives the store's client, so a reopened store sees the same set."""

    @pytest.fixture
    def vector_store_factory(self) -> VectorStoreFactory:
        server = fakeredis.FakeServer()
        return lambda dimension: RedisVectorStore(
            "compozy_contract", dimension, fakeredis.FakeRedis(server=server), owns_client=True
        )
