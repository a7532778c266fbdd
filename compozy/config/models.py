"""The configuration models and the rules that tie their fields together."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, Literal, Self, TypeVar, cast

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from compozy.config.messages import SENTENCE_ERROR, VALUE_ERROR, Loc, config_error
from compozy.core.values import MAX_LEASE

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from pydantic._internal._model_construction import ModelMetaclass
else:
    # The metaclass is not exported; take it from BaseModel so runtime needs no private import.
    ModelMetaclass = type(BaseModel)

__all__ = [
    "LOGGER_NAME",
    "ChunkingConfig",
    "Config",
    "ConfigSection",
    "DatabaseConfig",
    "Driver",
    "Duration",
    "EmbedderConfig",
    "EmbedderProvider",
    "KnowledgeBaseConfig",
    "KnowledgeConfig",
    "RetrievalConfig",
    "ServerConfig",
    "SourceConfig",
    "SslMode",
    "VectorDBConfig",
    "VectorDBProvider",
    "WorkerConfig",
    "parse_duration",
]

LOGGER_NAME = "compozy.config"

Driver = Literal["postgres", "sqlite"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
VectorDBProvider = Literal["pgvector", "qdrant", "redis", "filesystem"]

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# Alternatives are ordered so "ms" is tried before "m"; parts may repeat, as in "1m30s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_HINT = "should be a duration such as 5s, 250ms, 1m or 1.5s, or a number of seconds"


def parse_duration(value: object) -> object:
    """Turn "250ms", "1m30s" or a number of seconds into float seconds; leave the sign to Field."""
    if isinstance(value, bool):
        raise PydanticCustomError(VALUE_ERROR, _DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value.strip())
    else:
        raise PydanticCustomError(VALUE_ERROR, _DURATION_HINT)
    if not math.isfinite(seconds):
        raise PydanticCustomError(VALUE_ERROR, _DURATION_HINT)
    return seconds


def _parse_duration_text(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body:
        return _bad_duration()
    try:
        # float() also takes "nan" and "inf"; the caller rejects those.
        return sign * float(body)
    except ValueError:
        pass
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            return _bad_duration()
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    return sign * total


def _bad_duration() -> float:
    raise PydanticCustomError(VALUE_ERROR, _DURATION_HINT)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds as a float, written as a number or as text like "5s", "250ms", "1m"."""


def _any_case(value: object) -> object:
    """A setting that names a choice is read in any letter case: `SQLite` means `sqlite`."""
    return value.lower() if isinstance(value, str) and value.isascii() else value


def _sentence_error(message: str) -> PydanticCustomError:
    """An error whose message is already the full sentence the user will read."""
    return PydanticCustomError(SENTENCE_ERROR, "{message}", {"message": message})


class _TranslatingMeta(ModelMetaclass):
    """Makes `SomeSection(...)` raise ConfigError instead of pydantic's ValidationError.

    Hooking the call rather than `__init__` matters: pydantic calls a custom `__init__` for
    nested models too, which would translate too early, without the full path or the source.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            model = cast("type[ConfigSection]", cls)
            raise config_error(exc, model, model.section) from None


class ConfigSection(BaseModel, metaclass=_TranslatingMeta):
    """Base of every config model: unknown keys are errors and bad input raises ConfigError."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        coerce_numbers_to_str=True,
    )

    # The dotted path of this model inside Config, used to name fields in error messages.
    section: ClassVar[str] = ""

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate like pydantic, but raise ConfigError."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls, cls.section) from None

    @classmethod
    def from_settings(cls, data: Mapping[str, Any], sources: Mapping[Loc, str]) -> Self:
        """Validate merged settings; `sources` says where each value came from, for errors."""
        try:
            return super().model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, cls, cls.section, sources) from None


_POSTGRES_ONLY = ("conn_string", "host", "port", "user", "password", "name", "ssl_mode")
_SQLITE_ONLY = ("path", "busy_timeout")
_TEXT_FIELDS = ("conn_string", "host", "user", "password", "name", "dbname", "ssl_mode", "path")


MEMORY_PATH: Final = ":memory:"
"""The SQLite ``database.path`` of a private in-memory database."""


class DatabaseConfig(ConfigSection):
    """Which database holds compozy's state: PostgreSQL (the default) or SQLite."""

    section: ClassVar[str] = "database"

    driver: Annotated[Driver, BeforeValidator(_any_case)] = "postgres"
    # PostgreSQL: either a full connection string or the individual parts.
    conn_string: SecretStr | None = None
    host: str | None = None
    port: int = Field(default=5432, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    name: str | None = Field(default=None, validation_alias=AliasChoices("name", "dbname"))
    ssl_mode: Annotated[SslMode, BeforeValidator(_any_case)] | None = None
    # SQLite: an absolute file path or MEMORY_PATH.
    path: str | None = None
    busy_timeout: Duration = Field(default=5.0, ge=0)
    # Both drivers.
    auto_migrate: bool = True
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    connect_timeout: Duration = Field(default=10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _normalise_input(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "name" in data and "dbname" in data:
            raise _sentence_error(
                "database.name and database.dbname are both set, but dbname is only another "
                "spelling of name; keep one of them."
            )
        # An empty value (often an unset shell variable or `host: ""`) means "not set".
        return {
            key: value
            for key, value in data.items()
            if not (key in _TEXT_FIELDS and isinstance(value, str) and not value.strip())
        }

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        # The loader already resolved file-relative paths; this covers direct construction.
        if value is None or value == MEMORY_PATH:
            return value
        return os.path.abspath(os.path.expanduser(value))

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None (PostgreSQL, or SQLite in memory)."""
        if self.driver != "sqlite" or self.path is None or self.path == MEMORY_PATH:
            return None
        return Path(self.path)

    @model_validator(mode="after")
    def _check_driver_settings(self) -> Self:
        if self.driver == "sqlite":
            if self.path is None:
                raise _sentence_error(
                    "The sqlite driver needs database.path (a file path or ':memory:') but it "
                    "is not set; set database.path (or DB_PATH)."
                )
            ignored = self._set_fields(_POSTGRES_ONLY)
        else:
            self._check_postgres_settings()
            ignored = self._set_fields(_SQLITE_ONLY)
        if ignored:
            logging.getLogger(LOGGER_NAME).warning(
                "Ignoring %s because database.driver is %s; remove %s to silence this warning.",
                ", ".join(f"database.{field}" for field in ignored),
                self.driver,
                "it" if len(ignored) == 1 else "them",
            )
        return self

    def _check_postgres_settings(self) -> None:
        if self.conn_string is not None:
            return
        missing = [field for field in ("host", "user", "name") if getattr(self, field) is None]
        if not missing:
            return
        if len(missing) == 3:
            state = "none of them is set"
        else:
            names = " and ".join(f"database.{field}" for field in missing)
            state = f"{names} {'is' if len(missing) == 1 else 'are'} not set"
        raise _sentence_error(
            "The postgres driver (the default) needs database.conn_string, or all of "
            f"database.host, database.user and database.name, but {state}; set them "
            "(DB_CONN_STRING, or DB_HOST, DB_USER and DB_NAME), or use SQLite by setting "
            "database.driver: sqlite and database.path."
        )

    def _set_fields(self, fields: tuple[str, ...]) -> list[str]:
        """The given fields the user set explicitly to something other than None."""
        return [f for f in fields if f in self.model_fields_set and getattr(self, f) is not None]


EmbedderProvider = Literal["hashing", "openai", "sentence-transformers"]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_OPENAI_URL: Final = "https://api.openai.com/v1"


def _check_id(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError(VALUE_ERROR, "should not be empty")
    return value


def _check_env_name(value: str | None) -> str | None:
    # The key itself never belongs in the file; only the name of the variable that holds it.
    if value is not None and not _ENV_NAME.fullmatch(value):
        raise PydanticCustomError(
            VALUE_ERROR,
            "should be the name of an environment variable holding the key (such as "
            "OPENAI_API_KEY), not the key itself",
        )
    return value


KnowledgeId = Annotated[str, AfterValidator(_check_id)]
EnvName = Annotated[str | None, AfterValidator(_check_env_name)]


class EmbedderConfig(ConfigSection):
    """One embedder: turns texts into vectors of ``dimension`` numbers."""

    section: ClassVar[str] = "knowledge.embedders[]"

    id: KnowledgeId
    provider: Annotated[EmbedderProvider, BeforeValidator(_any_case)] = "hashing"
    dimension: int = Field(gt=0)
    model: str | None = None
    """openai: the model name; sentence-transformers: a model name or a local folder."""
    base_url: str | None = None
    """openai: the OpenAI-compatible endpoint (default https://api.openai.com/v1)."""
    api_key_env: EnvName = None
    """openai: the environment variable that holds the API key."""
    batch_size: int = Field(default=64, ge=1)
    cache: bool = False
    """Keep the vectors of texts embedded before in memory (an LRU keyed by sha256(text))."""

    @model_validator(mode="after")
    def _provider_settings(self) -> Self:
        if self.provider != "hashing" and not self.model:
            raise _sentence_error(
                f"knowledge.embedders ({self.id}): the {self.provider} provider needs model "
                "(the name of the embedding model); set model."
            )
        if self.provider == "openai" and self.base_url is None:
            self.base_url = _DEFAULT_OPENAI_URL
        return self


class VectorDBConfig(ConfigSection):
    """One vector database (docs/knowledge.md says which provider reads which field)."""

    section: ClassVar[str] = "knowledge.vector_dbs[]"

    id: KnowledgeId
    provider: Annotated[VectorDBProvider, BeforeValidator(_any_case)]
    dimension: int = Field(gt=0)
    path: str | None = None
    """filesystem: a directory (required); qdrant local mode: a directory or ":memory:"."""
    url: str | None = None
    """qdrant: the server's URL; redis: the redis:// URL (required)."""
    dsn: str | None = None
    """pgvector: a postgresql:// URL (default: the database's own connection on postgres)."""
    collection: str = ""
    """qdrant collection, redis key or pgvector table (default compozy_<id>, sanitised)."""
    api_key_env: EnvName = None
    """qdrant: the environment variable that holds the API key."""
    index: Literal["exact", "hnsw"] = "exact"
    """pgvector: exact (every row is compared: the true top_k) or hnsw (an approximate index,
    faster on large tables, which may miss some of the top_k)."""

    @model_validator(mode="after")
    def _provider_settings(self) -> Self:
        if not self.collection:
            self.collection = "compozy_" + re.sub(r"[^a-z0-9_]", "_", self.id.lower())
        needs = {
            "filesystem": ("path", "path (a directory for its files)"),
            "redis": ("url", "url (a redis:// URL)"),
        }.get(self.provider)
        if needs is not None and not getattr(self, needs[0]):
            raise _sentence_error(
                f"knowledge.vector_dbs ({self.id}): the {self.provider} provider needs "
                f"{needs[1]}, but it is not set; set {needs[0]}."
            )
        if self.provider == "qdrant" and not (self.path or self.url):
            raise _sentence_error(
                f"knowledge.vector_dbs ({self.id}): the qdrant provider needs url (a Qdrant "
                "server) or path (local mode: a directory or ':memory:'), but neither is set; "
                "set one of them."
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for key, value in super().__repr_args__():
            # The URLs may carry passwords.
            yield key, ("**********" if key in ("dsn", "url") and value else value)


class SourceConfig(ConfigSection):
    """Files of a knowledge base: one file (``path``) or a glob (``glob``) of .md/.txt files,
    relative to knowledge.root."""

    section: ClassVar[str] = "knowledge.knowledge_bases[].sources[]"

    path: str | None = None
    glob: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.path is None) == (self.glob is None):
            raise PydanticCustomError(
                VALUE_ERROR, "should set exactly one of path (a file) and glob (a pattern)"
            )
        return self


class ChunkingConfig(ConfigSection):
    """How documents are cut: ``size`` characters per chunk, ``overlap`` shared by neighbours."""

    section: ClassVar[str] = "knowledge.knowledge_bases[].chunking"

    size: int = Field(default=800, ge=64, le=8192)
    overlap: int = Field(default=120, ge=0)

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Self:
        if self.overlap >= self.size:
            raise PydanticCustomError(
                VALUE_ERROR,
                f"should have overlap ({self.overlap}) smaller than size ({self.size})",
            )
        return self


class RetrievalConfig(ConfigSection):
    """What a query returns by default."""

    section: ClassVar[str] = "knowledge.knowledge_bases[].retrieval"

    top_k: int = Field(default=5, ge=1, le=50)
    min_score: float = Field(default=0.0, ge=-1.0, le=1.0)


class KnowledgeBaseConfig(ConfigSection):
    """A searchable set of documents: where they come from, how they are embedded and stored."""

    section: ClassVar[str] = "knowledge.knowledge_bases[]"

    id: KnowledgeId
    description: str | None = None
    embedder: str | None = None
    """An embedder id (default: the only one configured, else hashing of the vector DB's
    dimension)."""
    vector_db: str | None = None
    """A vector DB id (default: the only one configured)."""
    sources: list[SourceConfig] = Field(min_length=1)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)


class KnowledgeConfig(ConfigSection):
    """Knowledge bases: embedders, vector databases, and the documents they make searchable."""

    section: ClassVar[str] = "knowledge"

    root: str | None = None
    """The folder relative sources and vector DB paths start from (the loader sets the folder
    of compozy.yaml; the current directory otherwise)."""
    embedders: list[EmbedderConfig] = Field(default_factory=list)
    vector_dbs: list[VectorDBConfig] = Field(default_factory=list)
    knowledge_bases: list[KnowledgeBaseConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        self.root = os.path.abspath(os.path.expanduser(self.root or os.getcwd()))
        for vector_db in self.vector_dbs:
            if vector_db.path and vector_db.path != MEMORY_PATH:
                vector_db.path = os.path.join(self.root, os.path.expanduser(vector_db.path))
        embedders = _unique("embedders", self.embedders)
        vector_dbs = _unique("vector_dbs", self.vector_dbs)
        _unique("knowledge_bases", self.knowledge_bases)
        for index, base in enumerate(self.knowledge_bases):
            where = f"knowledge.knowledge_bases[{index}] ({base.id})"
            vector_db = vector_dbs[_reference(where, "vector_db", base.vector_db, vector_dbs)]
            base.vector_db = vector_db.id
            if base.embedder is None and not embedders:
                continue  # the built-in hashing embedder, of the vector DB's dimension
            embedder = embedders[_reference(where, "embedder", base.embedder, embedders)]
            base.embedder = embedder.id
            if embedder.dimension != vector_db.dimension:
                raise _sentence_error(
                    f"{where}: embedder {embedder.id!r} has dimension {embedder.dimension} but "
                    f"vector_db {vector_db.id!r} has {vector_db.dimension}; make them equal."
                )
        return self

    def knowledge_base(self, kb_id: str) -> KnowledgeBaseConfig | None:
        """The knowledge base with this id, or None."""
        return next((base for base in self.knowledge_bases if base.id == kb_id), None)

    def embedder_for(self, base: KnowledgeBaseConfig) -> EmbedderConfig:
        """The embedder of ``base``: a configured one, or the default hashing embedder."""
        found = next((e for e in self.embedders if e.id == base.embedder), None)
        if found is not None:
            return found
        dimension = self.vector_db_for(base).dimension
        return EmbedderConfig(id="hashing", provider="hashing", dimension=dimension)

    def vector_db_for(self, base: KnowledgeBaseConfig) -> VectorDBConfig:
        """The vector DB of ``base``."""
        return next(v for v in self.vector_dbs if v.id == base.vector_db)


_Identified = TypeVar("_Identified", EmbedderConfig, VectorDBConfig, KnowledgeBaseConfig)


def _unique(name: str, entries: list[_Identified]) -> dict[str, _Identified]:
    """The entries by id; a repeated id is an error."""
    by_id: dict[str, _Identified] = {}
    for index, entry in enumerate(entries):
        if entry.id in by_id:
            raise _sentence_error(
                f"knowledge.{name}[{index}] repeats the id {entry.id!r}; give each of "
                f"knowledge.{name} its own id."
            )
        by_id[entry.id] = entry
    return by_id


def _reference(where: str, kind: str, wanted: str | None, known: Mapping[str, object]) -> str:
    """The id ``wanted`` names (or the only one there is), else an error listing the ids."""
    listed = ", ".join(repr(key) for key in known) or "none"
    if wanted is None:
        if len(known) == 1:
            return next(iter(known))
        raise _sentence_error(
            f"{where} does not say which {kind} to use and there are {len(known)} "
            f"(configured {kind}s: {listed}); set {kind}."
        )
    if wanted not in known:
        raise _sentence_error(
            f"{where}: {kind} {wanted!r} is not configured (configured {kind}s: {listed}); "
            f"add it under knowledge.{kind}s or fix the id."
        )
    return wanted


class WorkerConfig(ConfigSection):
    """How the workflow engine runs executions."""

    section: ClassVar[str] = "worker"

    max_concurrent_workflows: int = Field(default=4, ge=1)


class RuntimeConfig(ConfigSection):
    """How workers share executions through the database (docs/deployment.md)."""

    section: ClassVar[str] = "runtime"

    lease: Duration = Field(default=30.0, gt=0, le=MAX_LEASE)
    """How long a claim holds an execution without renewal; a dead worker's executions are
    resumed elsewhere this long after its last renewal."""
    poll_interval: Duration = Field(default=0.5, gt=0)
    """How often a worker renews its leases, looks for cancel requests and claims new work."""
    recovery: Annotated[Literal["resume", "fail"], BeforeValidator(_any_case)] = "resume"
    """What a worker does with an execution whose previous worker's lease expired."""
    shutdown_grace: Duration = Field(default=30.0, ge=0)
    """On SIGINT/SIGTERM, how long running executions get to finish before they are released."""
    worker_id: str | None = None
    """This worker's name in the database (default: host:pid:random)."""

    @model_validator(mode="after")
    def _renewal_fits_in_the_lease(self) -> Self:
        if self.poll_interval * 2 > self.lease:
            raise _sentence_error(
                f"runtime.poll_interval ({self.poll_interval:g}s) must be at most half of "
                f"runtime.lease ({self.lease:g}s), or leases expire between renewals; raise "
                "the lease or lower the interval."
            )
        return self


class ServerConfig(ConfigSection):
    """Where `compozy start` serves the HTTP API."""

    section: ClassVar[str] = "server"

    host: str = "127.0.0.1"
    port: int = Field(default=5001, ge=1, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    """The largest request body the API reads; a larger one is refused with 413."""
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], BeforeValidator(_any_case)
    ] = "warning"
    """What `compozy start` logs on stderr (the access log is separate: access_log)."""
    access_log: bool = False
    """One line on stderr per HTTP request: client, request line, status, bytes, duration."""
    metrics_auth: bool = False
    """Whether GET /metrics needs an API key (any user's), like the other routes."""

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError(VALUE_ERROR, "should not be empty")
        return value.strip()


def _one_or_many(value: object) -> object:
    """`workflows: workflows/*.yaml` means a list of that one pattern."""
    return [value] if isinstance(value, str) else value


class Config(ConfigSection):
    """The whole compozy configuration; each section is one field."""

    # default_factory runs DatabaseConfig(), so an absent database section is still checked
    # (postgres with nothing set fails with the message saying what to set).
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    knowledge: KnowledgeConfig = Field(default_factory=KnowledgeConfig)
    environment: str = "development"
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    # Workflow definition files or globs; the loader makes relative ones absolute.
    workflows: Annotated[list[str], BeforeValidator(_one_or_many)] = Field(default_factory=list)

    @field_validator("workflows")
    @classmethod
    def _no_blank_workflow_paths(cls, value: list[str]) -> list[str]:
        for index, entry in enumerate(value):
            if not entry.strip():
                raise _sentence_error(
                    f"workflows[{index}] is empty; give the path or glob of workflow YAML files, "
                    "such as workflows/*.yaml."
                )
        return value

    @model_validator(mode="after")
    def _check_vector_dbs(self) -> Self:
        if self.database.driver != "sqlite":
            return self
        for index, vector_db in enumerate(self.knowledge.vector_dbs):
            if vector_db.provider == "pgvector":
                raise _sentence_error(
                    f"knowledge.vector_dbs[{index}] (id {vector_db.id!r}) uses provider pgvector, "
                    "which needs the postgres driver, but database.driver is sqlite; configure "
                    "a Qdrant, Redis or Filesystem vector DB instead, or switch to postgres."
                )
        return self
