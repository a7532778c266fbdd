"""Configuration: models, and loading from defaults, compozy.yaml, environment and CLI flags."""

from compozy.config.loader import find_config_file, load_config
from compozy.config.models import (
    MEMORY_PATH,
    Config,
    ConfigSection,
    DatabaseConfig,
    Duration,
    EmbedderConfig,
    KnowledgeBaseConfig,
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
    "EmbedderConfig",
    "KnowledgeBaseConfig",
    "KnowledgeConfig",
    "RuntimeConfig",
    "ServerConfig",
    "VectorDBConfig",
    "WorkerConfig",
    "find_config_file",
    "load_config",
]
