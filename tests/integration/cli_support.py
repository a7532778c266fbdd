"""What the CLI tests share: running `compozy` in-process and checking its output."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from compozy_testkit.databases import TestDatabase

SHARED_BACKENDS = pytest.mark.compozy_backends(
    "sqlite-file", "postgres", reason="the CLI opens its database by path or URL"
)


@dataclass
class Result:
    """What one `compozy` run returned and printed."""

    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err_lines if not line.startswith("warning: ")]


class Cli(Protocol):
    def __call__(self, *args: str) -> Result: ...


def assert_one_error_line(result: Result) -> str:
    """The run failed as a user error: exit 2, one `error:` line on stderr, no traceback."""
    assert result.code == 2, result
    assert len(result.error_lines) == 1, result.err
    assert result.error_lines[0].startswith("error: ")
    assert "Traceback" not in result.err
    return result.error_lines[0]


def db_flags(database: TestDatabase) -> list[str]:
    """The flags that point the CLI at the test's database."""
    assert database.config is not None
    if database.backend == "postgres":
        assert database.config.conn_string is not None
        url = database.config.conn_string.get_secret_value()
        return ["--db-driver", "postgres", "--db-conn-string", url]
    return ["--db-driver", "sqlite", "--db-path", str(database.config.path)]


def run_compozy(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, stdin: int | None = None
) -> Result:
    """Run `compozy ARGS` as a real process (no DB_* variables but those in ``env``; stdin not a
    terminal unless ``stdin`` is one) and return its exit code and output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DB_")} | (env or {})
    done = subprocess.run(
        [sys.executable, "-m", "compozy.cli", *args],
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)
