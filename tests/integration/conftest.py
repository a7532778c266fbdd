"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from cli_support import Cli, Result

from compozy.cli.main import main
from compozy.config.loader import ENV_VARS


@pytest.fixture(autouse=True)
def _no_database_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DB_* variables of whoever runs the tests must not pick the database."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs `compozy ARGS` in-process and returns its exit code and output."""

    def run(*args: str) -> Result:
        capsys.readouterr()  # drop output from before this run
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
