"""Unit tests for compozy.config: sources, precedence, validation and error text."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from compozy.config import (
    Config,
    DatabaseConfig,
    KnowledgeConfig,
    VectorDBConfig,
    find_config_file,
    load_config,
)
from compozy.errors import ConfigError

SQLITE_ENV = {"DB_DRIVER": "sqlite", "DB_PATH": ":memory:"}
POSTGRES_ENV = {"DB_HOST": "db.internal", "DB_USER": "compozy", "DB_NAME": "compozy"}
PASSWORD = "hunter2-very-secret"
CONN_STRING = "postgresql://compozy:s3cr3t-conn@db.internal/compozy"


def write_yaml(directory: Path, text: str, name: str = "compozy.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(**kwargs: Any) -> str:
    """The message of the ConfigError that load_config raises for these arguments."""
    with pytest.raises(ConfigError) as info:
        load_config(**kwargs)
    return str(info.value)


# --- precedence: defaults < yaml < env < overrides ---------------------------------------------


def test_defaults_apply_when_no_source_sets_a_value(tmp_path: Path) -> None:
    config = load_config(env=SQLITE_ENV, cwd=tmp_path)

    assert config.environment == "development"
    assert config.database.busy_timeout == 5.0
    assert config.database.auto_migrate is True
    assert config.database.pool_size == 5
    assert config.database.max_overflow == 10
    assert config.database.connect_timeout == 10.0
    assert config.knowledge.vector_dbs == []


def test_yaml_beats_defaults(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        "environment: production\n"
        "database:\n  driver: sqlite\n  path: ':memory:'\n  busy_timeout: 2s\n  pool_size: 3\n",
    )

    config = load_config(env={}, cwd=tmp_path)

    assert config.environment == "production"
    assert config.database.driver == "sqlite"
    assert config.database.busy_timeout == 2.0
    assert config.database.pool_size == 3


def test_env_beats_yaml(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: sqlite\n  path: ':memory:'\n  busy_timeout: 2s\n")

    config = load_config(env={"DB_BUSY_TIMEOUT": "7s", "DB_AUTO_MIGRATE": "off"}, cwd=tmp_path)

    assert config.database.busy_timeout == 7.0
    assert config.database.auto_migrate is False
    assert config.database.path == ":memory:"  # untouched by env, still from the file


def test_overrides_beat_env(tmp_path: Path) -> None:
    env = {**SQLITE_ENV, "DB_BUSY_TIMEOUT": "7s"}

    config = load_config(env=env, overrides={"database": {"busy_timeout": "9s"}}, cwd=tmp_path)

    assert config.database.busy_timeout == 9.0


def test_override_switches_driver_set_by_yaml_and_env(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  host: db.internal\n  user: compozy\n  name: compozy\n")

    config = load_config(
        env={"DB_DRIVER": "postgres"},
        overrides={"database": {"driver": "sqlite", "path": "cli.db"}},
        cwd=tmp_path,
    )

    assert config.database.driver == "sqlite"
    assert config.database.path == str(tmp_path / "cli.db")


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    config = load_config(
        env={**SQLITE_ENV, "DB_BUSY_TIMEOUT": "7s"},
        overrides={"database": {"busy_timeout": None, "driver": None, "path": None}},
        cwd=tmp_path,
    )

    assert config.database.driver == "sqlite"
    assert config.database.busy_timeout == 7.0


def test_empty_env_values_are_ignored(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: sqlite\n  path: ':memory:'\n")

    config = load_config(env={"DB_DRIVER": "", "DB_PATH": "", "DB_PORT": ""}, cwd=tmp_path)

    assert config.database.driver == "sqlite"
    assert config.database.path == ":memory:"


def test_real_environment_is_used_when_env_is_not_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_DRIVER", "sqlite")
    monkeypatch.setenv("DB_PATH", ":memory:")

    assert load_config(cwd=tmp_path).database.driver == "sqlite"


# --- database.driver ---------------------------------------------------------------------------


def test_unknown_driver_names_field_value_and_allowed_values(tmp_path: Path) -> None:
    message = config_error(env={"DB_DRIVER": "mysql"}, cwd=tmp_path)

    assert "database.driver" in message
    assert "'mysql'" in message
    assert "postgres" in message
    assert "sqlite" in message
    assert "DB_DRIVER" in message


def test_direct_database_config_with_unknown_driver_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"database\.driver is 'mysql'.*postgres, sqlite"):
        DatabaseConfig(driver="mysql")


def test_direct_model_validate_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"database\.port"):
        DatabaseConfig.model_validate({"driver": "sqlite", "path": ":memory:", "port": "x"})


def test_postgres_is_the_default_driver() -> None:
    config = DatabaseConfig(host="h", user="u", name="n")

    assert config.driver == "postgres"
    assert config.port == 5432


# --- required fields per driver ----------------------------------------------------------------


def test_nothing_configured_says_what_postgres_needs_and_offers_sqlite(tmp_path: Path) -> None:
    message = config_error(env={}, cwd=tmp_path)

    for needed in ("database.conn_string", "database.host", "database.user", "database.name"):
        assert needed in message
    assert "default" in message
    assert "driver: sqlite" in message
    assert "database.path" in message


def test_partial_postgres_settings_name_only_the_missing_fields(tmp_path: Path) -> None:
    message = config_error(env={"DB_HOST": "db.internal", "DB_USER": "compozy"}, cwd=tmp_path)

    assert "database.name is not set" in message


def test_postgres_conn_string_alone_is_enough() -> None:
    config = DatabaseConfig(conn_string=CONN_STRING)

    assert config.conn_string is not None
    assert config.conn_string.get_secret_value() == CONN_STRING


def test_postgres_parts_from_env(tmp_path: Path) -> None:
    env = {**POSTGRES_ENV, "DB_PORT": "6543", "DB_PASSWORD": PASSWORD, "DB_SSL_MODE": "require"}

    database = load_config(env=env, cwd=tmp_path).database

    assert (database.host, database.port, database.user, database.name) == (
        "db.internal",
        6543,
        "compozy",
        "compozy",
    )
    assert database.password is not None
    assert database.password.get_secret_value() == PASSWORD
    assert database.ssl_mode == "require"


def test_sqlite_without_path_is_an_error(tmp_path: Path) -> None:
    message = config_error(env={"DB_DRIVER": "sqlite"}, cwd=tmp_path)

    assert "database.path" in message
    assert "sqlite" in message


def test_bad_ssl_mode_lists_the_allowed_modes() -> None:
    with pytest.raises(ConfigError, match=r"database\.ssl_mode is 'sometimes'.*verify-full"):
        DatabaseConfig(host="h", user="u", name="n", ssl_mode="sometimes")


def test_fields_of_the_other_driver_are_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = {**SQLITE_ENV, "DB_HOST": "db.internal", "DB_PASSWORD": PASSWORD}

    with caplog.at_level(logging.WARNING, logger="compozy.config"):
        load_config(env=env, overrides={"knowledge": {"vector_dbs": []}}, cwd=tmp_path)

    ignored = [r.getMessage() for r in caplog.records if "Ignoring" in r.getMessage()]
    assert len(ignored) == 1
    assert "database.host" in ignored[0]
    assert "database.password" in ignored[0]
    assert PASSWORD not in caplog.text


# --- dbname alias ------------------------------------------------------------------------------


def test_dbname_is_accepted_as_an_alias_of_name(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  host: h\n  user: u\n  dbname: orders\n")

    assert load_config(env={}, cwd=tmp_path).database.name == "orders"
    assert DatabaseConfig(host="h", user="u", dbname="orders").name == "orders"


def test_env_name_overrides_yaml_dbname(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  host: h\n  user: u\n  dbname: from_yaml\n")

    assert load_config(env={"DB_NAME": "from_env"}, cwd=tmp_path).database.name == "from_env"


def test_name_and_dbname_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"database\.name and database\.dbname"):
        DatabaseConfig(host="h", user="u", name="a", dbname="b")


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5s", 5.0),
        ("250ms", 0.25),
        ("1m", 60.0),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("2", 2.0),
        (3, 3.0),
        (0.5, 0.5),
        ("0s", 0.0),
    ],
)
def test_busy_timeout_accepts_durations(raw: object, seconds: float) -> None:
    assert (
        DatabaseConfig(driver="sqlite", path=":memory:", busy_timeout=raw).busy_timeout == seconds
    )


@pytest.mark.parametrize("raw", ["soon", "5 parsecs", "s", "", "nan", True, [5]])
def test_busy_timeout_rejects_non_durations(raw: object) -> None:
    with pytest.raises(ConfigError, match=r"database\.busy_timeout"):
        DatabaseConfig(driver="sqlite", path=":memory:", busy_timeout=raw)


def test_negative_busy_timeout_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"database\.busy_timeout should be greater than or equal"
    ):
        DatabaseConfig(driver="sqlite", path=":memory:", busy_timeout="-1s")


def test_connect_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"database\.connect_timeout should be greater than 0"):
        DatabaseConfig(driver="sqlite", path=":memory:", connect_timeout="0s")


def test_busy_timeout_from_env_is_parsed(tmp_path: Path) -> None:
    config = load_config(env={**SQLITE_ENV, "DB_BUSY_TIMEOUT": "250ms"}, cwd=tmp_path)

    assert config.database.busy_timeout == 0.25


def test_bad_busy_timeout_in_env_names_the_variable(tmp_path: Path) -> None:
    message = config_error(env={**SQLITE_ENV, "DB_BUSY_TIMEOUT": "forever"}, cwd=tmp_path)

    assert "database.busy_timeout" in message
    assert "'forever'" in message
    assert "DB_BUSY_TIMEOUT" in message


# --- auto_migrate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_db_auto_migrate_words(tmp_path: Path, raw: str, expected: bool) -> None:
    config = load_config(env={**SQLITE_ENV, "DB_AUTO_MIGRATE": raw}, cwd=tmp_path)

    assert config.database.auto_migrate is expected


@pytest.mark.parametrize("raw", ["maybe", "t", "2"])
def test_db_auto_migrate_rejects_other_words(tmp_path: Path, raw: str) -> None:
    message = config_error(env={**SQLITE_ENV, "DB_AUTO_MIGRATE": raw}, cwd=tmp_path)

    assert "DB_AUTO_MIGRATE" in message
    assert repr(raw) in message


def test_auto_migrate_from_yaml(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: sqlite\n  path: ':memory:'\n  auto_migrate: false\n")

    assert load_config(env={}, cwd=tmp_path).database.auto_migrate is False


# --- sqlite paths ------------------------------------------------------------------------------


def test_relative_path_in_yaml_is_relative_to_the_yaml_file(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    config_file = write_yaml(config_dir, "database:\n  driver: sqlite\n  path: data/app.db\n")
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()

    config = load_config(config_file, env={}, cwd=elsewhere)

    assert config.database.path == str(config_dir / "data" / "app.db")


def test_relative_path_from_env_is_relative_to_cwd(tmp_path: Path) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    config_file = write_yaml(config_dir, "database:\n  driver: sqlite\n  path: ignored.db\n")

    config = load_config(config_file, env={"DB_PATH": "env.db"}, cwd=tmp_path)

    assert config.database.path == str(tmp_path / "env.db")


def test_relative_path_from_overrides_is_relative_to_cwd(tmp_path: Path) -> None:
    config = load_config(
        env={"DB_DRIVER": "sqlite"}, overrides={"database": {"path": "../cli.db"}}, cwd=tmp_path
    )

    assert config.database.path == str(tmp_path.parent / "cli.db")


def test_memory_path_is_never_resolved(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: sqlite\n  path: ':memory:'\n")

    assert load_config(env={}, cwd=tmp_path).database.path == ":memory:"


def test_home_in_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    config = load_config(env={"DB_DRIVER": "sqlite", "DB_PATH": "~/app.db"}, cwd=tmp_path)

    assert config.database.path == str(tmp_path / "home" / "app.db")


def test_direct_relative_path_becomes_absolute() -> None:
    path = DatabaseConfig(driver="sqlite", path="direct.db").path

    assert path is not None
    assert os.path.isabs(path)
    assert path.endswith("direct.db")


# --- unknown fields ----------------------------------------------------------------------------


def test_unknown_field_in_yaml_is_named_with_its_dotted_path(tmp_path: Path) -> None:
    config_file = write_yaml(tmp_path, "database:\n  drvier: sqlite\n  path: ':memory:'\n")

    message = config_error(env={}, cwd=tmp_path)

    assert "database.drvier" in message
    assert "not a known setting" in message
    assert "database.driver" in message  # the suggestion
    assert str(config_file) in message


def test_unknown_top_level_section_is_an_error(tmp_path: Path) -> None:
    message = config_error(env=SQLITE_ENV, overrides={"knowlege": {"vector_dbs": []}}, cwd=tmp_path)

    assert "knowlege is not a known setting" in message


def test_unknown_field_passed_directly_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"database\.colour is not a known setting"):
        DatabaseConfig(driver="sqlite", path=":memory:", colour="blue")


# --- the config file ---------------------------------------------------------------------------


def test_explicit_config_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    message = config_error(config_file=missing, env=SQLITE_ENV, cwd=tmp_path)

    assert str(missing) in message
    assert "does not exist" in message


def test_explicit_relative_config_file_is_relative_to_cwd(tmp_path: Path) -> None:
    write_yaml(tmp_path, "environment: staging\n", name="custom.yaml")

    config = load_config("custom.yaml", env=SQLITE_ENV, cwd=tmp_path)

    assert config.environment == "staging"


def test_explicit_config_file_wins_over_compozy_yaml_in_cwd(tmp_path: Path) -> None:
    write_yaml(tmp_path, "environment: from-default-file\n")
    other = write_yaml(tmp_path, "environment: from-explicit-file\n", name="other.yaml")

    assert load_config(other, env=SQLITE_ENV, cwd=tmp_path).environment == "from-explicit-file"


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    config_file = write_yaml(
        tmp_path, f"database:\n  driver: sqlite\n  password: {PASSWORD}\n  path: [unclosed\n"
    )

    message = config_error(env={}, cwd=tmp_path)

    assert str(config_file) in message
    assert "not valid YAML" in message
    assert "line " in message
    assert PASSWORD not in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    config_file = write_yaml(tmp_path, text)

    message = config_error(env=SQLITE_ENV, cwd=tmp_path)

    assert str(config_file) in message
    assert "mapping" in message


def test_empty_yaml_file_is_fine(tmp_path: Path) -> None:
    write_yaml(tmp_path, "")

    assert load_config(env=SQLITE_ENV, cwd=tmp_path).database.driver == "sqlite"


def test_empty_section_in_yaml_means_defaults(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\nknowledge:\n")

    assert load_config(env=SQLITE_ENV, cwd=tmp_path).knowledge.vector_dbs == []


# --- vector databases --------------------------------------------------------------------------


def test_pgvector_with_sqlite_is_an_error_naming_entry_and_alternatives(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        "knowledge:\n  vector_dbs:\n"
        "    - {id: files, provider: filesystem, path: vectors, dimension: 8}\n"
        "    - {id: docs, provider: pgvector, dimension: 8}\n",
    )

    message = config_error(env=SQLITE_ENV, cwd=tmp_path)

    assert "knowledge.vector_dbs[1]" in message
    assert "'docs'" in message
    assert "pgvector" in message
    for alternative in ("Qdrant", "Redis", "Filesystem"):
        assert alternative in message


def test_sqlite_with_an_empty_knowledge_section_says_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Knowledge features are simply unused without knowledge bases: no warning on any command.
    write_yaml(tmp_path, "knowledge:\n  vector_dbs: []\n")

    with caplog.at_level(logging.WARNING, logger="compozy.config"):
        config = load_config(env=SQLITE_ENV, cwd=tmp_path)

    assert config.knowledge.vector_dbs == []
    assert not [r for r in caplog.records if r.name == "compozy.config"]


def test_sqlite_with_a_non_pgvector_db_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    qdrant = {"id": "q", "provider": "qdrant", "path": ":memory:", "dimension": 4}
    overrides = {"knowledge": {"vector_dbs": [qdrant]}}

    with caplog.at_level(logging.WARNING, logger="compozy.config"):
        config = load_config(env=SQLITE_ENV, overrides=overrides, cwd=tmp_path)

    assert config.knowledge.vector_dbs[0].provider == "qdrant"
    assert config.knowledge.vector_dbs[0].path == ":memory:"
    assert not [r for r in caplog.records if r.name == "compozy.config"]


def test_postgres_with_pgvector_is_accepted_without_a_dsn(tmp_path: Path) -> None:
    # Without dsn the vector DB is the database's own PostgreSQL.
    pgvector = {"id": "docs", "provider": "pgvector", "dimension": 384}

    config = load_config(env=POSTGRES_ENV, overrides={"knowledge": {"vector_dbs": [pgvector]}})

    assert config.knowledge.vector_dbs[0].id == "docs"
    assert config.knowledge.vector_dbs[0].provider == "pgvector"
    assert config.knowledge.vector_dbs[0].dsn is None
    assert config.knowledge.vector_dbs[0].collection == "compozy_docs"


def test_vector_db_collection_defaults_to_a_sanitised_id() -> None:
    vector_db = VectorDBConfig(id="My-Docs 2", provider="redis", url="redis://r", dimension=4)

    assert vector_db.collection == "compozy_my_docs_2"


def test_vector_db_urls_are_masked_in_repr() -> None:
    vector_db = VectorDBConfig(
        id="r", provider="redis", url="redis://:vector-pass@r:6379/2", dimension=4
    )

    assert "vector-pass" not in repr(vector_db)
    assert "dimension=4" in repr(vector_db)


def test_vector_db_settings_are_typed_and_unknown_ones_refused() -> None:
    with pytest.raises(ConfigError, match=r"vector_dbs\[\]\.root is not a known setting"):
        VectorDBConfig(id="f", provider="filesystem", path="v", dimension=4, root="/tmp")


def test_unknown_vector_db_provider_lists_the_providers() -> None:
    with pytest.raises(ConfigError, match=r"vector_dbs\[0\]\.provider is 'milvus'.*qdrant"):
        KnowledgeConfig(vector_dbs=[{"id": "m", "provider": "milvus", "dimension": 4}])


def test_vector_db_id_must_not_be_empty(tmp_path: Path) -> None:
    redis = {"id": " ", "provider": "redis", "url": "redis://r", "dimension": 4}

    message = config_error(env=POSTGRES_ENV, overrides={"knowledge": {"vector_dbs": [redis]}})

    assert "knowledge.vector_dbs[0].id" in message


def test_vector_db_ids_must_be_unique() -> None:
    dbs = [
        {"id": "a", "provider": "redis", "url": "redis://r", "dimension": 4},
        {"id": "a", "provider": "qdrant", "url": "http://q:6333", "dimension": 4},
    ]

    with pytest.raises(ConfigError, match=r"knowledge\.vector_dbs\[1\] repeats the id 'a'"):
        Config(database={"driver": "sqlite", "path": ":memory:"}, knowledge={"vector_dbs": dbs})


# --- secrets -----------------------------------------------------------------------------------


def test_password_and_conn_string_are_not_in_repr_or_str() -> None:
    database = DatabaseConfig(conn_string=CONN_STRING, password=PASSWORD)
    config = Config(database=database)

    for text in (repr(database), str(database), repr(config), str(config)):
        assert PASSWORD not in text
        assert "s3cr3t-conn" not in text


def test_bad_port_next_to_password_keeps_the_password_out_of_the_error(tmp_path: Path) -> None:
    env = {**POSTGRES_ENV, "DB_PORT": "not-a-port", "DB_PASSWORD": PASSWORD}

    message = config_error(env=env, cwd=tmp_path)

    assert "database.port" in message
    assert "DB_PORT" in message
    assert "'not-a-port'" in message
    assert PASSWORD not in message


@pytest.mark.parametrize(("field", "value"), [("password", [PASSWORD]), ("conn_string", True)])
def test_invalid_secret_value_is_never_echoed(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        DatabaseConfig(host="h", user="u", name="n", **{field: value})

    message = str(info.value)
    assert f"database.{field}" in message
    assert "value hidden" in message
    assert PASSWORD not in message
    assert "True" not in message


def test_conn_string_given_as_the_database_section_is_never_echoed(tmp_path: Path) -> None:
    write_yaml(tmp_path, f"database: {CONN_STRING}\n")

    message = config_error(env={}, cwd=tmp_path)

    assert "database" in message
    assert "s3cr3t-conn" not in message


def test_errors_from_direct_construction_are_not_pydantic_errors() -> None:
    with pytest.raises(ConfigError) as info:
        DatabaseConfig(driver="sqlite", path=":memory:", pool_size=0, password=PASSWORD)

    assert "database.pool_size" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True


# --- worker, server and workflows --------------------------------------------------------------


def test_worker_server_and_workflows_defaults(tmp_path: Path) -> None:
    config = load_config(env=SQLITE_ENV, cwd=tmp_path)

    assert config.worker.max_concurrent_workflows == 4
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 5001
    assert config.workflows == []


def test_worker_and_server_from_yaml_and_overrides(tmp_path: Path) -> None:
    write_yaml(tmp_path, "worker:\n  max_concurrent_workflows: 12\nserver:\n  port: 8080\n")

    config = load_config(
        env=SQLITE_ENV, overrides={"server": {"host": "0.0.0.0", "port": None}}, cwd=tmp_path
    )

    assert config.worker.max_concurrent_workflows == 12
    assert config.server.port == 8080  # the None override is ignored
    assert config.server.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("worker:\n  max_concurrent_workflows: 0\n", "worker.max_concurrent_workflows"),
        ("worker:\n  max_concurrent_workflows: many\n", "worker.max_concurrent_workflows"),
        ("server:\n  port: 0\n", "server.port"),
        ("server:\n  port: 65536\n", "server.port"),
        ("server:\n  host: '  '\n", "server.host"),
        ("worker:\n  threads: 3\n", "worker.threads"),
        ("workflows: ['']\n", "workflows[0]"),
    ],
)
def test_invalid_worker_server_or_workflows_setting_is_named(
    tmp_path: Path, text: str, setting: str
) -> None:
    write_yaml(tmp_path, text)

    message = config_error(env=SQLITE_ENV, cwd=tmp_path)

    assert setting in message


def test_relative_workflow_paths_in_yaml_are_relative_to_the_yaml_file(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    config_file = write_yaml(
        project, "workflows:\n  - workflows/*.yaml\n  - ../shared/one.yaml\n  - /abs/two.yaml\n"
    )

    config = load_config(config_file, env=SQLITE_ENV, cwd=tmp_path / "elsewhere")

    assert config.workflows == [
        str(project / "workflows" / "*.yaml"),
        str(tmp_path / "shared" / "one.yaml"),
        "/abs/two.yaml",
    ]


def test_relative_workflow_paths_from_overrides_are_relative_to_cwd(tmp_path: Path) -> None:
    config = load_config(env=SQLITE_ENV, overrides={"workflows": ["w/*.yml"]}, cwd=tmp_path)

    assert config.workflows == [str(tmp_path / "w" / "*.yml")]


def test_a_single_workflow_pattern_may_be_given_as_text(tmp_path: Path) -> None:
    write_yaml(tmp_path, "workflows: workflows/*.yaml\n")

    config = load_config(env=SQLITE_ENV, cwd=tmp_path)

    assert config.workflows == [str(tmp_path / "workflows" / "*.yaml")]


def test_glob_characters_in_the_config_folder_match_literally(tmp_path: Path) -> None:
    project = tmp_path / "odd[1]"
    project.mkdir()
    (project / "workflows").mkdir()
    (project / "workflows" / "a.yaml").write_text("id: a\n", encoding="utf-8")
    config_file = write_yaml(project, "workflows: [workflows/*.yaml]\n")

    config = load_config(config_file, env=SQLITE_ENV, cwd=tmp_path)

    import glob

    assert glob.glob(config.workflows[0]) == [str(project / "workflows" / "a.yaml")]


# --- choices in any letter case ----------------------------------------------------------------


def test_settings_that_name_a_choice_are_read_in_any_letter_case(tmp_path: Path) -> None:
    write_yaml(
        tmp_path,
        "runtime:\n  recovery: FAIL\nknowledge:\n  vector_dbs:\n"
        "    - {id: q, provider: Qdrant, path: ':memory:', dimension: 4}\n",
    )

    config = load_config(env={"DB_DRIVER": "SQLite", "DB_PATH": ":memory:"}, cwd=tmp_path)

    assert config.database.driver == "sqlite"
    assert config.runtime.recovery == "fail"
    assert config.knowledge.vector_dbs[0].provider == "qdrant"
    postgres = DatabaseConfig(driver="POSTGRES", host="h", user="u", name="n", ssl_mode="Require")
    assert (postgres.driver, postgres.ssl_mode) == ("postgres", "require")


def test_a_choice_in_no_case_still_lists_the_allowed_values(tmp_path: Path) -> None:
    message = config_error(env={"DB_DRIVER": "MySQL"}, cwd=tmp_path)

    assert "database.driver is 'mysql' (from environment variable DB_DRIVER)" in message
    assert "the allowed values are postgres, sqlite" in message


def test_a_lease_longer_than_a_day_is_refused(tmp_path: Path) -> None:
    message = config_error(
        env=SQLITE_ENV, overrides={"runtime": {"lease": "25h", "poll_interval": "1s"}}, cwd=tmp_path
    )

    assert "runtime.lease should be less than or equal to 86400" in message


# --- finding compozy.yaml ----------------------------------------------------------------------


def test_the_nearest_compozy_yaml_in_a_folder_above_is_read(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: sqlite\n  path: .compozy/compozy.db\n")
    deeper = tmp_path / "sub" / "deeper"
    deeper.mkdir(parents=True)

    assert find_config_file(deeper) == tmp_path / "compozy.yaml"
    config = load_config(env={}, cwd=deeper)

    assert config.database.path == str(tmp_path / ".compozy" / "compozy.db")


def test_the_nearest_compozy_yaml_wins_over_one_further_up(tmp_path: Path) -> None:
    write_yaml(tmp_path, "database:\n  driver: postgres\n")
    inner = tmp_path / "project"
    (inner / "workflows").mkdir(parents=True)
    write_yaml(inner, "database:\n  driver: sqlite\n  path: inner.db\n")

    config = load_config(env={}, cwd=inner / "workflows")

    assert config.database.path == str(inner / "inner.db")


def test_without_any_compozy_yaml_the_error_says_none_was_found(tmp_path: Path) -> None:
    assert find_config_file(tmp_path) is None

    message = config_error(env={}, cwd=tmp_path)

    assert message.startswith(f"no compozy.yaml in {tmp_path} or any folder above it")
    assert "pass --config FILE" in message
    assert "the postgres driver (the default) needs database.conn_string" in message


def test_a_database_set_by_the_environment_is_not_blamed_on_a_missing_file(
    tmp_path: Path,
) -> None:
    message = config_error(env={"DB_DRIVER": "sqlite"}, cwd=tmp_path)

    assert "compozy.yaml" not in message
    assert "database.path" in message


def test_the_search_for_compozy_yaml_stops_below_a_folder_others_can_write(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    (shared / "victim").mkdir(parents=True)
    (shared / "compozy.yaml").write_text("database: {driver: sqlite, path: planted.db}\n")
    assert find_config_file(shared / "victim") == shared / "compozy.yaml"  # private: found
    shared.chmod(0o1777)  # world-writable, like /tmp
    try:
        assert find_config_file(shared / "victim") is None
        assert find_config_file(shared) == shared / "compozy.yaml"  # where you stand, still read
    finally:
        shared.chmod(0o700)
