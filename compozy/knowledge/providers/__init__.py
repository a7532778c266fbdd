"""The vector store providers, opened from a vector DB's configuration.

``open_vector_store(config)`` imports the provider's module only when it is asked for, so a
project that uses the filesystem store needs numpy and nothing else; a missing client library
is one error naming the pip extra that brings it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from compozy.errors import ConfigError

if TYPE_CHECKING:
    from compozy.config import DatabaseConfig, VectorDBConfig
    from compozy.knowledge import VectorStore

__all__ = ["PROVIDERS", "open_vector_store"]

PROVIDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    # provider: (module with open_store(config, ...), the packages it imports)
    "filesystem": ("compozy.knowledge.providers.filesystem", ("numpy",)),
    "qdrant": ("compozy.knowledge.providers.qdrant", ("numpy", "qdrant_client")),
    "redis": ("compozy.knowledge.providers.redis", ("numpy", "redis")),
    "pgvector": ("compozy.knowledge.providers.pgvector", ("numpy", "pgvector")),
}

_PIP_NAMES = {"qdrant_client": "qdrant-client"}


def open_vector_store(
    config: VectorDBConfig, *, database: DatabaseConfig | None = None
) -> VectorStore:
    """Open the vector store that ``config`` describes (``database``: the project's database,
    whose connection a pgvector store without a dsn uses)."""
    provider = config.provider
    if provider not in PROVIDERS:
        raise ConfigError(
            f"knowledge.vector_dbs ({config.id}): provider {provider!r} is not one of "
            f"{', '.join(sorted(PROVIDERS))}"
        )
    module_name, packages = PROVIDERS[provider]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in packages:
            raise
        raise ConfigError(
            f"the {provider} vector store needs the {_PIP_NAMES.get(missing, missing)} package, "
            'which is not installed; install it with: pip install "compozy[knowledge]"'
        ) from None
    if provider == "pgvector":
        store: VectorStore = module.open_store(config, database=database)
    else:
        store = module.open_store(config)
    return store
