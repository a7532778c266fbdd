"""The controls around the commands: `python -m compozy`, `--version`, shell completion."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from compozy import __version__

HEAVY = ("fastapi", "sqlalchemy", "uvicorn", "pydantic", "compozy.store", "compozy.engine")


def _compozy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compozy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=60,
    )


def test_python_dash_m_compozy_is_the_command() -> None:
    result = _compozy("--version")

    assert (result.returncode, result.stdout, result.stderr) == (0, f"compozy {__version__}\n", "")


def test_version_loads_no_database_web_or_engine_module() -> None:
    """What keeps `compozy --version` fast (benchmarks/cli_startup.py times it): the commands'
    modules are imported only when a command runs."""
    script = (
        "import json, sys\n"
        "from compozy.cli.main import main\n"
        "code = main(['--version'])\n"
        f"print(json.dumps([code, sorted(m for m in sys.modules if m.startswith({HEAVY!r}))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    code, loaded = json.loads(result.stdout.splitlines()[-1])

    assert code == 0
    assert loaded == []


def test_help_still_lists_every_command() -> None:
    result = _compozy("--help")

    assert result.returncode == 0, result.stderr
    for command in ("init", "run", "start", "worker", "migrate", "executions", "completion"):
        assert f" {command} " in result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish", "powershell"])
def test_completion_prints_a_script_for_each_shell(shell: str) -> None:
    result = _compozy("completion", shell)

    assert result.returncode == 0, result.stderr
    assert "_COMPOZY_COMPLETE" in result.stdout
    assert "compozy" in result.stdout


def test_completion_of_an_unknown_shell_is_one_error_line() -> None:
    result = _compozy("completion", "tcsh")

    assert result.returncode == 2
    assert result.stderr == (
        "error: no completion for shell 'tcsh'; choose bash, zsh, fish, powershell\n"
    )


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("compozy mig", "1", ["migrate"]),
        ("compozy migrate ", "2", ["up", "down", "status"]),
        ("compozy run --inp", "2", ["--input"]),
    ],
)
def test_the_bash_script_completes_commands_and_options(
    words: str, cword: str, expected: list[str]
) -> None:
    """What the bash script runs on TAB: the command with the words typed so far."""
    env = {"_COMPOZY_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}

    result = _compozy(env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected
