"""Request limits (413, 415), GET /metrics and the access log, through HTTP on every backend."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from compozy.api.metrics import DURATION_BUCKETS
from compozy.api.middleware import ACCESS_LOGGER
from compozy.core import Status
from compozy.store import Store
from compozy.workflow import WorkflowState

START = "/api/v0/workflows/hello/executions"
JSON = {"Content-Type": "application/json"}


def _error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


# --- body limit and content type -----------------------------------------------------------


def test_a_body_over_the_limit_is_413_before_it_is_read(
    compozy_store: Store, app_factory: Any, starter: Any, member: Any
) -> None:
    with TestClient(app_factory(compozy_store, engine=starter, max_body_bytes=100)) as client:
        small = client.post(START, json={"input": {"n": "x" * 50}}, headers=member.headers)
        large = client.post(START, json={"input": {"n": "x" * 200}}, headers=member.headers)

    assert small.status_code == 202, small.text
    message = _error(large, 413, "PayloadTooLarge")
    assert "over the limit of 100 bytes (server.max_body_bytes)" in message
    assert len(starter.calls) == 1  # the large one never reached the engine


def test_a_chunked_body_over_the_limit_is_413(
    compozy_store: Store, app_factory: Any, starter: Any, member: Any
) -> None:
    def chunks() -> Any:  # no Content-Length: the client sends it chunked
        yield b'{"input": {"n": "'
        yield b"x" * 300
        yield b'"}}'

    with TestClient(app_factory(compozy_store, engine=starter, max_body_bytes=100)) as client:
        response = client.post(START, content=chunks(), headers={**member.headers, **JSON})

    assert "over the limit of 100 bytes" in _error(response, 413, "PayloadTooLarge")
    assert starter.calls == []


def test_the_default_limit_is_10_mib(client: TestClient, member: Any, starter: Any) -> None:
    just_under = b'{"input": {"n": "' + b"x" * (10 * 1024 * 1024 - 100) + b'"}}'
    over = b'{"input": {"n": "' + b"x" * (10 * 1024 * 1024) + b'"}}'

    assert client.post(START, content=just_under, headers={**member.headers, **JSON}).is_success
    response = client.post(START, content=over, headers={**member.headers, **JSON})
    assert "over the limit of 10485760 bytes" in _error(response, 413, "PayloadTooLarge")


@pytest.mark.parametrize(
    ("content_type", "said"),
    [
        (None, "none was given"),
        ("text/plain", "got 'text/plain'"),
        ("application/x-www-form-urlencoded", "got 'application/x-www-form-urlencoded'"),
    ],
)
def test_a_body_that_is_not_sent_as_json_is_415(
    client: TestClient, member: Any, admin: Any, content_type: str | None, said: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    started = client.post(START, content=b'{"input": {}}', headers={**member.headers, **headers})
    user = client.post(
        "/api/v0/users", content=b'{"email": "a@b.co"}', headers={**admin.headers, **headers}
    )

    for response in (started, user):
        message = _error(response, 415, "UnsupportedMediaType")
        assert message.startswith("the request body must be JSON, sent with Content-Type: ")
        assert said in message


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_content_types_are_accepted(
    client: TestClient, member: Any, content_type: str
) -> None:
    response = client.post(
        START, content=b'{"input": {}}', headers={**member.headers, "Content-Type": content_type}
    )
    assert response.status_code == 202, response.text


def test_a_post_without_a_body_needs_no_content_type(client: TestClient, member: Any) -> None:
    assert client.post(START, headers=member.headers).status_code == 202


# --- metrics -----------------------------------------------------------------------------


def _samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line of an exposition."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def _finished(store: Store, workflow_id: str, status: Status, seconds: float) -> None:
    """A stored execution that took about ``seconds`` from creation to ``status``."""
    created = datetime.now(UTC) - timedelta(seconds=seconds)
    state = store.workflows.upsert_state(
        WorkflowState(workflow_id=workflow_id, status=Status.RUNNING, created_at=created)
    )
    store.workflows.update_status(state.workflow_exec_id, status)


def test_metrics_count_executions_by_workflow_and_status_with_durations(
    client: TestClient, compozy_store: Store
) -> None:
    _finished(compozy_store, "hello", Status.SUCCESS, 0.0)
    _finished(compozy_store, "hello", Status.SUCCESS, 2.0)
    _finished(compozy_store, "hello", Status.FAILED, 40.0)
    compozy_store.workflows.upsert_state(WorkflowState(workflow_id='we"ird', status=Status.PENDING))

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = _samples(response.text)
    executions = "compozy_workflow_executions"
    assert samples[f'{executions}{{workflow_id="hello",status="SUCCESS"}}'] == 2
    assert samples[f'{executions}{{workflow_id="hello",status="FAILED"}}'] == 1
    assert samples[f'{executions}{{workflow_id="we\\"ird",status="PENDING"}}'] == 1
    duration = "compozy_workflow_execution_duration_seconds"
    success = 'workflow_id="hello",status="SUCCESS"'
    assert samples[f'{duration}_bucket{{{success},le="0.1"}}'] == 1
    assert samples[f'{duration}_bucket{{{success},le="1"}}'] == 1
    assert samples[f'{duration}_bucket{{{success},le="5"}}'] == 2
    assert samples[f'{duration}_bucket{{{success},le="+Inf"}}'] == 2
    assert samples[f"{duration}_count{{{success}}}"] == 2
    assert 2.0 <= samples[f"{duration}_sum{{{success}}}"] < 3.0
    failed = 'workflow_id="hello",status="FAILED"'
    assert samples[f'{duration}_bucket{{{failed},le="30"}}'] == 0
    assert samples[f'{duration}_bucket{{{failed},le="60"}}'] == 1
    # A PENDING execution has no duration yet.
    assert not any(name.startswith(f'{duration}_count{{workflow_id="we') for name in samples)
    assert (
        len([n for n in samples if n.startswith(f"{duration}_bucket{{{success}")])
        == len(DURATION_BUCKETS) + 1
    )
    assert samples["compozy_database_up"] == 1
    assert f'compozy_info{{version="0.1.0",driver="{compozy_store.driver}"}}' in samples


def test_metrics_are_well_formed(client: TestClient, compozy_store: Store) -> None:
    """Every family has HELP and TYPE before its samples, and every sample is of a family."""
    _finished(compozy_store, "hello", Status.SUCCESS, 0.5)
    text = client.get("/metrics").text
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    sample = re.compile(r'^([a-z_]+)(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.e+Inf]+$')
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            declared[name] = kind
            continue
        assert sample.match(line), line
        name = line.split("{", 1)[0].split(" ", 1)[0]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in declared or declared.get(family) == "histogram", line


def test_metrics_report_the_pool_of_a_pooled_database(
    client: TestClient, compozy_store: Store
) -> None:
    samples = _samples(client.get("/metrics").text)
    if compozy_store.location == "in-memory":  # one shared connection, no pool to count
        assert "compozy_db_pool_size" not in samples
        return
    assert samples["compozy_db_pool_size"] >= 1
    assert samples['compozy_db_pool_connections{state="in_use"}'] >= 0
    assert samples['compozy_db_pool_connections{state="idle"}'] >= 1
    assert samples["compozy_db_pool_overflow"] == 0


def test_metrics_say_the_database_is_down_instead_of_failing(
    compozy_database: Any, app_factory: Any
) -> None:
    store = compozy_database.open()
    app = app_factory(store)
    store.close()
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)
    assert samples["compozy_database_up"] == 0
    assert not any(name.startswith("compozy_workflow_executions") for name in samples)


def test_metrics_need_a_key_when_configured(
    compozy_store: Store, app_factory: Any, member: Any
) -> None:
    with TestClient(app_factory(compozy_store, metrics_auth=True)) as client:
        anonymous = client.get("/metrics")
        keyed = client.get("/metrics", headers=member.headers)
        document = client.get("/openapi.json").json()
    _error(anonymous, 401, "Unauthorized")
    assert keyed.status_code == 200
    assert document["paths"]["/metrics"]["get"]["security"] == [{"APIKey": []}]


# --- access log ----------------------------------------------------------------------------


def test_the_access_log_has_one_line_per_request_without_the_key(
    compozy_store: Store,
    app_factory: Any,
    starter: Any,
    member: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        TestClient(app_factory(compozy_store, engine=starter, access_log=True)) as client,
        caplog.at_level(logging.INFO, logger=ACCESS_LOGGER),
    ):
        client.post(START, json={"input": {}}, headers=member.headers)
        client.get("/api/v0/executions/workflows?limit=2", headers=member.headers)
        client.get("/nowhere")

    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 3
    assert re.fullmatch(
        r'testclient "POST /api/v0/workflows/hello/executions HTTP/1.1" 202 \d+ [\d.]+ms', lines[0]
    )
    assert '"GET /api/v0/executions/workflows?limit=2 HTTP/1.1" 200 ' in lines[1]
    assert '"GET /nowhere HTTP/1.1" 404 ' in lines[2]
    assert not any(member.plaintext in line for line in lines)


def test_no_access_log_unless_asked(
    client: TestClient, member: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.get("/health")
    assert [r for r in caplog.records if r.name == ACCESS_LOGGER] == []
