"""Pure parts of the store: SQL file splitting, URL building, value encodings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from compozy.config import DatabaseConfig
from compozy.core.values import format_timestamp, parse_timestamp
from compozy.errors import ConfigError
from compozy.store.drivers.base import first_line
from compozy.store.drivers.postgres import build_url
from compozy.store.migrations.sqlfile import read_section, split_statements
from compozy.store.types import UTCDateTime, json_text


def test_split_statements_ignores_semicolons_in_quotes_and_comments() -> None:
    sql = """
    -- a comment; with a semicolon and a 'quote
    CREATE TABLE t (v TEXT DEFAULT 'a;b', "odd;name" TEXT);
    INSERT INTO t VALUES ('it''s; fine');  -- trailing; comment
    ;
    """
    assert split_statements(sql) == [
        """CREATE TABLE t (v TEXT DEFAULT 'a;b', "odd;name" TEXT)""",
        "INSERT INTO t VALUES ('it''s; fine')",
    ]


def test_read_section_returns_only_the_requested_section(tmp_path: Path) -> None:
    path = tmp_path / "x.sql"
    path.write_text("-- header\n-- migrate:up\nUP;\n-- migrate:down\nDOWN;\n")
    assert read_section(path, "up").strip() == "UP;"
    assert read_section(path, "down").strip() == "DOWN;"
    path.write_text("UP;\n")
    with pytest.raises(ValueError, match="migrate:up"):
        read_section(path, "up")


@pytest.mark.parametrize(
    "conn_string",
    [
        "postgres://alice:s3cret@db.example:6543/app?sslmode=require",
        "postgresql://alice:s3cret@db.example:6543/app?sslmode=require",
        "postgresql+psycopg://alice:s3cret@db.example:6543/app?sslmode=require",
        "host=db.example port=6543 user=alice password=s3cret dbname=app sslmode=require",
    ],
)
def test_build_url_accepts_urls_and_libpq_keywords(conn_string: str) -> None:
    url = build_url(DatabaseConfig(conn_string=conn_string))
    assert (url.drivername, url.host, url.port, url.username) == (
        "postgresql+psycopg",
        "db.example",
        6543,
        "alice",
    )
    assert (url.password, url.database, url.query["sslmode"]) == ("s3cret", "app", "require")


def test_build_url_from_fields() -> None:
    config = DatabaseConfig(
        host="h", user="u", password=SecretStr("p"), name="n", ssl_mode="disable"
    )
    url = build_url(config)
    assert url.render_as_string(hide_password=False) == (
        "postgresql+psycopg://u:p@h:5432/n?sslmode=disable"
    )


def test_build_url_refuses_another_scheme_without_echoing_the_password() -> None:
    with pytest.raises(ConfigError, match="mysql") as raised:
        build_url(DatabaseConfig(conn_string="mysql://u:topsecret@h/db"))
    assert "topsecret" not in str(raised.value)


def test_first_line_drops_sqlalchemy_statement_and_parameters() -> None:
    error = Exception("UNIQUE constraint failed: users.email_key\n[SQL: INSERT ...]\n(Background)")
    assert first_line(error) == "UNIQUE constraint failed: users.email_key"


def test_timestamps_are_fixed_width_and_round_trip() -> None:
    moments = [datetime(1, 1, 1, tzinfo=UTC), datetime(2026, 11, 26, 1, 2, 3, 4, tzinfo=UTC)]
    texts = [format_timestamp(m) for m in moments]
    assert texts == ["0001-01-01T00:00:00.000000Z", "2026-11-26T01:02:03.000004Z"]
    assert [parse_timestamp(t) for t in texts] == moments
    with pytest.raises(ValueError, match="fixed-width"):
        parse_timestamp("2026-11-26T01:02:03Z")


def test_sqlite_stores_the_one_timestamp_text() -> None:
    # The SQLite column holds exactly compozy.core.values' text, as databases already hold it.
    sqlite = sa.create_engine("sqlite://").dialect
    column = UTCDateTime()
    moment = datetime(5, 1, 1, 5, 30, 0, 7, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    stored = column.process_bind_param(moment, sqlite)
    assert stored == "0005-01-01T00:00:00.000007Z" == format_timestamp(moment)
    assert column.process_result_value(stored, sqlite) == moment
    with pytest.raises(ValueError, match="fixed-width"):
        column.process_result_value("5-01-01T00:00:00.000007Z", sqlite)


@pytest.mark.parametrize("value", [1.5e300, -2e20, 1e16, [{"x": 3e25}], 0.1, 1e-7, 2**70])
def test_json_text_spells_wide_integral_floats_exactly(value: object) -> None:
    text = json_text(value)
    assert "e+" not in text
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("conn_string", "message"),
    [
        ("postgresql://u:pw@host:notaport/db", "not a valid URL"),
        ("host=h port", "neither a postgresql:// URL nor libpq"),
        ("host=127.0.0.1 port=abc dbname=x password=pw", "has port='abc', which is not a port"),
        ("host=h port=70000 password=pw", "port='70000', .* from 1 to 65535"),
        ("host=h port=5432,5433 password=pw", "port='5432,5433'"),
        ("host=h port=\u0665 password=pw", "port='\u0665'"),  # an Arabic-Indic digit five
    ],
)
def test_build_url_refuses_malformed_connection_strings(conn_string: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        build_url(DatabaseConfig(conn_string=conn_string))
    assert "pw" not in str(raised.value)


def test_first_line_of_an_empty_error_is_its_type_name() -> None:
    assert first_line(KeyError()) == "KeyError"
    assert first_line(None) == "NoneType"


def test_a_usage_entry_without_provider_or_model_is_a_validation_error() -> None:
    from compozy.errors import ValidationError
    from compozy.usage import UsageEntry

    with pytest.raises(ValidationError, match="model"):
        UsageEntry.from_json({"provider": "p"})
