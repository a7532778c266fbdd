"""Configuration: models, and loading from defaults, compozy.yaml, environment and CLI flags."""

from compozy.config.loader import load_config
from compozy.config.models import (
    MEMORY_PATH,
    Config,
    ConfigSection,
    DatabaseConfig,
    Duration,
    KnowledgeConfig,
    RuntimeConfig,
    ServerConfig,
    VectorDBConfig,
    WorkerConfig,
)

__all__ = [
    "MEMORY_PATH",
    "Config",
    "ConfigSection",
    "DatabaseConfig",
    "Duration",
    "KnowledgeConfig",
    "RuntimeConfig",
    "ServerConfig",
    "VectorDBConfig",
    "WorkerConfig",
    "load_config",
]
