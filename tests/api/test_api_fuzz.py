"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid, with an admin's key applied through
the document's security scheme (so schemathesis also sends requests without it). Each response
must pass schemathesis's checks: no 5xx, a documented status, content type, headers and body
schema, invalid data refused, valid data accepted. Random ids only ever find 404s, so each
operation with a path parameter is also run against stored entities, which puts the 2xx bodies
(the task tree included) under the schema check too.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from compozy.config import load_config
from compozy.knowledge.bases import KnowledgeBases
from compozy.store import Store

START_PATH = "/api/v0/workflows/{workflow_id}/executions"
PAGED_LISTS = [
    "GET /api/v0/executions/workflows",
    "GET /api/v0/users",
    "GET /api/v0/users/{user_id}/api-keys",
]
MAX_EXAMPLES = 30  # per operation and generation mode: the whole test stays well under a minute

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure in CI reproduces locally
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.compozy_backends(
    "sqlite",
    "postgres",
    reason="fuzzed on each database once; a SQLite file adds nothing over in-memory SQLite",
)
def test_generated_requests_get_documented_answers_and_never_a_5xx(
    compozy_store: Store,
    app_factory: Any,
    starter: Any,
    admin: Any,
    task_factory: Any,
    user_factory: Any,
    api_key_factory: Any,
    tmp_path: Path,
) -> None:
    (tmp_path / "note.md").write_text("# Note\n\nA short note for the fuzzer to find.\n")
    notes = {"id": "notes", "sources": [{"path": "note.md"}]}
    vectors = {"id": "v", "provider": "filesystem", "path": "vectors", "dimension": 16}
    knowledge = {"vector_dbs": [vectors], "knowledge_bases": [notes]}
    sqlite = {"driver": "sqlite", "path": ":memory:"}
    overrides = {"database": sqlite, "knowledge": knowledge}
    bases = KnowledgeBases(load_config(env={}, overrides=overrides, cwd=tmp_path))
    app = app_factory(compozy_store, engine=starter, knowledge=bases)
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"APIKey": {"bearer": admin.plaintext}}},
            "operations": [
                {
                    # `input` is any JSON object whose strings hold no U+0000 (neither database
                    # can store one), which OpenAPI cannot state for arbitrary nesting: such
                    # "schema-valid" input is rightly refused with a 422 (test_api_start.py).
                    # Every other check still runs on this operation.
                    "include-path": START_PATH,
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                {
                    # A `cursor` is opaque: only one the server gave out reads a page, so a
                    # generated one of the documented alphabet is rightly refused with a 422
                    # (test_api_paging.py). Every other check still runs on these operations.
                    "include-name": PAGED_LISTS,
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

    tree = task_factory.tree(depth=2, fan_out=2)
    holder = user_factory.create()
    api_key_factory.create(user=holder)
    doomed_user = user_factory.create()
    doomed_key = api_key_factory.create(user=holder)
    known_ids = {
        ("POST", "workflow_id"): "hello",  # the starter double's workflow
        ("GET", "exec_id"): tree[0].workflow_exec_id,
        ("POST", "exec_id"): tree[0].workflow_exec_id,  # RUNNING: canceling it only marks it
        ("GET", "task_exec_id"): tree[1].task_exec_id,
        ("GET", "user_id"): holder.id,
        ("POST", "user_id"): holder.id,
        ("DELETE", "user_id"): doomed_user.id,
        ("DELETE", "key_id"): doomed_key.id,
        ("POST", "kb"): "notes",
    }

    failures: list[str] = []
    answered: Counter[tuple[str, int]] = Counter()

    def run(operation: Any, strategy: Any, what: str) -> None:
        @FUZZ_SETTINGS
        @given(case=strategy)
        def check(case: Any) -> None:
            response = case.call_and_validate()
            answered[(operation.label, response.status_code)] += 1

        try:
            check()
        except BaseException as exc:  # schemathesis raises an exception group of failures
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.label} ({what}):\n{exc}")

    # Each result is Ok(operation) or Err(InvalidSchema); ok() raises on the latter.
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 17
    for operation in operations:
        run(operation, operation.as_strategy(generation_mode=GenerationMode.POSITIVE), "positive")
        has_input = any(
            len(part) for part in (operation.path_parameters, operation.query, operation.headers)
        ) or len(operation.body)
        if has_input:
            strategy = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            run(operation, strategy, "negative")
        names = [parameter.name for parameter in operation.path_parameters]
        if names:
            fixed = {name: known_ids[(operation.method.upper(), name)] for name in names}
            # The stored execution stays RUNNING: a generated `?wait=` long-poll would hold
            # each request until its wait is over (test_api_wait.py tests the long-poll).
            waits = {"wait": 0} if any(q.name == "wait" for q in operation.query) else None
            strategy = operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters=fixed, query=waits
            )
            run(operation, strategy, f"stored {fixed}")

    assert not failures, "\n\n".join(failures)
    # Each operation succeeded at least once, so its 2xx body was checked against the schema.
    succeeded = {label for (label, status), _ in answered.items() if 200 <= status < 300}
    assert succeeded == {operation.label for operation in operations}
    assert not any(status >= 500 for _, status in answered)
    bases.close()
