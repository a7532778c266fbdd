"""The vector store contract on a real Redis 8 or later (vector sets) at REDIS_URL, each test on
a key of its own, deleted afterwards.

Without REDIS_URL the module is skipped (one line), except when COMPOZY_REQUIRE_REDIS=1 (the
GitHub workflow's job with a Redis service sets it): there every test fails instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

from compozy.config import VectorDBConfig
from compozy.knowledge import VectorStore
from compozy.knowledge.providers import open_vector_store
from compozy_testkit.vectors import VectorStoreContract, VectorStoreFactory

REDIS_URL = os.environ.get("REDIS_URL", "")
REQUIRE_REDIS = os.environ.get("COMPOZY_REQUIRE_REDIS") == "1"
NO_REDIS = "no Redis: set REDIS_URL to a Redis 8 or later (vector sets)"

if not REDIS_URL and not REQUIRE_REDIS:
    pytest.skip(NO_REDIS, allow_module_level=True)


class TestRedisServer(VectorStoreContract):
    @pytest.fixture
    def vector_store_factory(self) -> Iterator[VectorStoreFactory]:
        if not REDIS_URL:
            pytest.fail(f"{NO_REDIS} (required: COMPOZY_REQUIRE_REDIS=1)", pytrace=False)
        key = f"compozy_contract_{secrets.token_hex(6)}"

        def factory(dimension: int) -> VectorStore:
            config = VectorDBConfig(
                id="contract", provider="redis", url=REDIS_URL, collection=key, dimension=dimension
            )
            return open_vector_store(config)

        yield factory
        with redis.Redis.from_url(REDIS_URL) as client:
            client.delete(key)
