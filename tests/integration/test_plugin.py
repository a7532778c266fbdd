"""The pytest plugin itself, driven through pytester in fresh pytest processes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytest_plugins = ["pytester"]

ISOLATION_SUITE = """
import threading

from compozy.core import Status
from compozy.workflow import WorkflowState


def test_1_commits_from_threads_and_a_second_store(compozy_store, compozy_database):
    def write(i):
        compozy_store.workflows.upsert_state(
            WorkflowState(workflow_exec_id=f"w{i}", workflow_id="w", status=Status.RUNNING))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if compozy_database.shareable:
        other = compozy_database.open()
        other.workflows.upsert_state(
            WorkflowState(workflow_exec_id="other", workflow_id="w", status=Status.RUNNING))
    assert len(compozy_store.workflows.list_states()) >= 3


def test_2_starts_clean(compozy_store):
    assert compozy_store.workflows.list_states() == []
"""


def _environment_without_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """No URL, no initdb/pg_ctl on PATH, no Docker engine: nowhere to get PostgreSQL."""
    for name in (
        "COMPOZY_TEST_POSTGRES_URL",
        "COMPOZY_TEST_BACKENDS",
        "CI",
        "COMPOZY_TEST_POSTGRES_SOURCE",
    ):
        monkeypatch.delenv(name, raising=False)
    initdb = shutil.which("initdb")
    kept = [
        p
        for p in os.environ["PATH"].split(os.pathsep)
        if not initdb or Path(p) != Path(initdb).parent
    ]
    monkeypatch.setenv("PATH", os.pathsep.join(kept))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")


def test_backend_aware_tests_run_once_per_backend_with_the_backend_in_the_id(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(compozy_backend):\n    assert compozy_backend\n")
    result = pytester.runpytest_subprocess(
        "-v", "--compozy-backend", "sqlite", "--compozy-backend", "sqlite-file"
    )
    result.stdout.fnmatch_lines(
        [
            "compozy backends: sqlite, sqlite-file",
            "*test_x[[]sqlite[]] PASSED*",
            "*test_x[[]sqlite-file[]] PASSED*",
        ]
    )
    assert result.ret == 0


def test_the_header_names_where_postgres_came_from_and_how_long_it_took(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(compozy_store):\n    assert compozy_store.driver\n")
    result = pytester.runpytest_subprocess("-v", "--compozy-backend", "postgres")
    result.stdout.fnmatch_lines(
        ["compozy postgres: *, ready in *s*", "*test_x[[]postgres[]] PASSED*"]
    )


def test_every_test_starts_clean_even_after_commits_threads_and_other_stores(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(ISOLATION_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--compozy-backend", "all")
    result.assert_outcomes(passed=6)


def test_with_xdist_each_worker_uses_its_own_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WHERE_DIR", str(tmp_path))
    pytester.makepyfile(
        """
        import os, pathlib, pytest

        @pytest.mark.parametrize("n", range(12))
        @pytest.mark.compozy_backends("postgres", "sqlite-file")
        def test_where(compozy_store, compozy_backend, n):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            out = pathlib.Path(os.environ["WHERE_DIR"]) / f"{compozy_backend}-{worker}-{n}"
            out.write_text(compozy_store.location)
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--compozy-backend", "all")
    assert result.ret == 0, result.stdout.str()
    for backend in ("postgres", "sqlite-file"):
        seen: dict[str, set[str]] = {}
        for path in tmp_path.glob(f"{backend}-gw*"):
            worker = path.name.split("-")[-2]
            location = path.read_text()
            if backend == "postgres":  # one database per worker, named after it
                location = location.rsplit("/", 1)[1]
                assert location.endswith(f"_{worker}"), location
            seen.setdefault(worker, set()).add(location)
        assert set(seen) == {"gw0", "gw1"}, seen
        if backend == "postgres":
            assert all(len(names) == 1 for names in seen.values()), seen
            assert seen["gw0"] != seen["gw1"]


def test_without_any_postgres_the_postgres_tests_skip_with_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment_without_postgres(monkeypatch)
    pytester.makepyfile(
        test_one="".join(f"def test_{i}(compozy_store):\n    pass\n" for i in range(3)),
        test_two="import pytest\n\n@pytest.mark.parametrize('n', [1, 2])\n"
        "def test_p(compozy_store, n):\n    pass\n",
    )
    result = pytester.runpytest_subprocess("-rs", "--compozy-backend", "postgres")
    result.assert_outcomes(skipped=5)
    skip_lines = [line for line in result.stdout.lines if line.startswith("SKIPPED")]
    assert len(skip_lines) == 1, skip_lines
    assert "[5]" in skip_lines[0]
    assert "no PostgreSQL" in skip_lines[0]
    assert "initdb and pg_ctl not on PATH" in skip_lines[0]


@pytest.mark.parametrize("how", [["--compozy-require-postgres"], ["CI=true"], ["ini"]])
def test_without_any_postgres_the_postgres_tests_fail_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: list[str]
) -> None:
    _environment_without_postgres(monkeypatch)
    args = ["--compozy-backend", "postgres"]
    if how == ["CI=true"]:
        monkeypatch.setenv("CI", "true")
    elif how == ["ini"]:
        pytester.makeini("[pytest]\ncompozy_require_postgres = true\n")
    else:
        args += how
    pytester.makepyfile("def test_x(compozy_store):\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*no PostgreSQL*required*"])


def test_the_backends_marker_skips_other_backends_with_its_reason(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.compozy_backends("sqlite-file", reason="needs a file")
        def test_x(compozy_backend):
            assert compozy_backend == "sqlite-file"
        """
    )
    result = pytester.runpytest_subprocess(
        "-rs", "--compozy-backend", "sqlite", "--compozy-backend", "sqlite-file"
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*sqlite: needs a file*"])


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--compozy-backend", "mysql"], {}, "*unknown compozy backend 'mysql'*"),
        ([], {"COMPOZY_TEST_BACKENDS": "sqlite,oracle"}, "*unknown compozy backend 'oracle'*"),
    ],
)
def test_an_unknown_backend_is_a_usage_error(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_backends_come_from_the_environment_then_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPOZY_TEST_BACKENDS", raising=False)
    pytester.makeini("[pytest]\ncompozy_backends = sqlite-file\n")
    pytester.makepyfile("def test_x(compozy_backend):\n    pass\n")
    pytester.runpytest_subprocess("-v").stdout.fnmatch_lines(["*test_x[[]sqlite-file[]]*"])
    monkeypatch.setenv("COMPOZY_TEST_BACKENDS", "sqlite")
    pytester.runpytest_subprocess("-v").stdout.fnmatch_lines(["*test_x[[]sqlite[]] PASSED*"])


def test_the_command_line_wins_over_the_environment_and_the_ini_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOZY_TEST_BACKENDS", "sqlite")
    monkeypatch.setenv("COMPOZY_TEST_POSTGRES_SOURCE", "bogus")  # refused, once it counts
    pytester.makeini("[pytest]\ncompozy_backends = postgres\ncompozy_postgres_source = local\n")
    pytester.makepyfile("def test_x(compozy_backend):\n    pass\n")
    result = pytester.runpytest_subprocess(
        "-v", "--compozy-backend", "sqlite-file", "--compozy-postgres-source", "docker"
    )
    result.stdout.fnmatch_lines(
        ["compozy backends: sqlite-file", "*test_x[[]sqlite-file[]] PASSED*"]
    )
    assert result.ret == 0


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a new interpreter, nothing imported beforehand."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_the_plugin_module_imports_nothing_optional_at_load_time() -> None:
    # A project that installed compozy without the testkit extra has no factory-boy; pytest
    # still loads this plugin through the entry point, so loading must not need it.
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guarded(name, *a, **k):\n"
        "    if name.split('.')[0] in ('factory', 'filelock', 'testcontainers'):\n"
        "        raise ImportError(name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guarded\n"
        "import compozy_testkit.plugin\n"
        "print('loaded')\n"
    )
    result = _fresh_python(code)
    assert result.stdout.strip() == "loaded", result.stderr


def test_the_plugin_loads_only_pytest_and_the_standard_library() -> None:
    # The exact rule behind the plugin-load contract in pyproject.toml: Import Linter also sees
    # the imports inside functions and under TYPE_CHECKING, so it has to ignore those; this checks
    # that they stay lazy. Whatever pytest itself loads is imported before the snapshot.
    code = (
        "import sys\n"
        "import pytest\n"
        "before = set(sys.modules)\n"
        "import compozy_testkit.plugin\n"
        "loaded = {name.partition('.')[0] for name in set(sys.modules) - before}\n"
        "extra = loaded - sys.stdlib_module_names - {'compozy_testkit'}\n"
        # sysconfig's generated module is standard library too, under a platform-specific name.
        "print(*sorted(m for m in extra if not m.startswith('_sysconfigdata_')))\n"
    )
    result = _fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip(), f"loading the plugin imported {result.stdout.strip()}"


def test_a_run_that_collects_no_postgres_test_starts_no_postgres(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n\ndef test_x(compozy_store):\n    pass\n")
    result = pytester.runpytest_subprocess("-v", "--compozy-backend", "all", "-k", "plain")
    result.assert_outcomes(passed=1)
    assert not [line for line in result.stdout.lines if "ready in" in line]
    result.stdout.fnmatch_lines(["compozy postgres: started after collection, if *"])


def test_a_query_budget_fails_with_the_statements_and_the_report_lists_them(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        from compozy.workflow import WorkflowState

        def test_n_plus_one(compozy_store, compozy_queries):
            ids = [
                compozy_store.workflows.upsert_state(
                    WorkflowState(workflow_id="wf", status="RUNNING")
                ).workflow_exec_id
                for _ in range(3)
            ]
            with compozy_queries.assert_max(2):
                for exec_id in ids:  # one read per execution: an N+1
                    compozy_store.workflows.get_state(exec_id)
        """
    )
    result = pytester.runpytest_subprocess("--compozy-backend", "sqlite")
    result.stdout.fnmatch_lines(
        [
            "*6 queries ran, over the budget of 2:",
            "*  1. SELECT workflow_states.workflow_exec_id*",
            "*- compozy queries -*",
            "*INSERT INTO workflow_states*",
        ]
    )
    assert result.ret == 1


def test_the_run_ends_with_tests_and_seconds_per_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import time\n\n"
        "def test_x(compozy_backend):\n"
        "    time.sleep(1.0 if compozy_backend == 'sqlite-file' else 0)\n\n"
        "def test_y(compozy_store):\n    assert compozy_store\n\n"
        "def test_plain():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("--compozy-backend", "sqlite,sqlite-file")
    line = next(x for x in result.outlines if x.startswith("compozy time per backend:"))
    found = re.findall(r"(sqlite(?:-file)?) (\d+) tests in ([\d.]+)s", line)
    assert {name: int(n) for name, n, _ in found} == {"sqlite": 2, "sqlite-file": 2}
    seconds = {name: float(s) for name, _, s in found}
    assert seconds["sqlite-file"] >= 1.0  # its sleep is counted where it ran


@pytest.mark.compozy_backends("postgres", reason="the kept template is PostgreSQL's")
def test_reuse_db_keeps_the_migrated_template_until_create_db(
    pytester: pytest.Pytester, request: pytest.FixtureRequest, compozy_backend: str
) -> None:
    from compozy_testkit.provision.postgres import PostgresServer
    from compozy_testkit.session import STATE_KEY, history_fingerprint

    run = request.config.stash[STATE_KEY].postgres
    assert run is not None
    server = PostgresServer(run.admin_url, "this run's", 0.0)
    template = f"cpzy_tpl_{history_fingerprint()}"

    def oid() -> int | None:
        with psycopg.connect(run.admin_url) as conn:
            row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (template,))
            found = row.fetchone()
        return int(found[0]) if found else None

    pytester.makepyfile("def test_x(compozy_store):\n    assert compozy_store.driver\n")
    flags = ["--compozy-backend", "postgres", "--compozy-postgres-url", run.admin_url]
    try:
        first = pytester.runpytest_subprocess(*flags, "--compozy-reuse-db", "--compozy-create-db")
        assert first.ret == 0
        built = oid()
        assert built is not None  # kept after the run
        again = pytester.runpytest_subprocess(*flags, "--compozy-reuse-db")
        assert again.ret == 0
        assert oid() == built  # found, not built again
        rebuilt = pytester.runpytest_subprocess(*flags, "--compozy-reuse-db", "--compozy-create-db")
        assert rebuilt.ret == 0
        assert oid() not in (None, built)
        plain = pytester.runpytest_subprocess(*flags)
        assert plain.ret == 0
    finally:
        server.drop_database(template)
    assert oid() is None
