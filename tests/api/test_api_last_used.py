"""An API key's ``last_used`` is written at most once a minute: a request is a read only.

(A client polling many times a second must not queue a write per request behind the
workflow engine's writes; SQLite has one writer.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from compozy.api.auth import LAST_USED_PRECISION
from compozy.core.values import utc_now
from compozy.store import Store, sql_connection
from compozy.store.tables import api_keys

EXECUTIONS = "/api/v0/executions/workflows"


def _last_used(store: Store, key_id: str) -> Any:
    return store.auth.get_api_key_by_id(key_id).last_used


def test_requests_within_a_minute_write_last_used_once(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    first = _last_used(compozy_store, member.key.id)
    assert first is not None
    for _ in range(3):
        assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    assert _last_used(compozy_store, member.key.id) == first


def test_a_last_used_older_than_a_minute_is_written_again(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    stale = utc_now() - LAST_USED_PRECISION - timedelta(seconds=5)
    with sql_connection(compozy_store, write=True) as conn:
        conn.execute(
            sa.update(api_keys).where(api_keys.c.id == member.key.id).values(last_used=stale)
        )
    assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    now = _last_used(compozy_store, member.key.id)
    assert now > stale + LAST_USED_PRECISION
