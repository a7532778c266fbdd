"""Authentication and roles: the 401/403 matrix, last_used, and the bcrypt verdict cache."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

import compozy.api.auth as api_auth
from compozy.api.auth import VerifiedKeyCache, parse_bearer
from compozy.api.errors import ApiError
from compozy.auth import APIKey
from compozy.auth.keys import TEST_BCRYPT_ROUNDS, fingerprint, new_api_key, verify_api_key
from compozy.store import Store

USERS = "/api/v0/users"
EXECUTIONS = "/api/v0/executions/workflows"


def _assert_unauthorized(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "Unauthorized"


def _filled(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "some-id", path)


def test_every_route_but_health_metrics_and_docs_needs_a_key(client: TestClient) -> None:
    # Walks the OpenAPI document, so a route added later without auth fails here.
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for path, operations in paths.items():
        for method in operations:
            response = client.request(method.upper(), _filled(path))
            if path in ("/health", "/metrics"):
                assert response.status_code == 200
                continue
            _assert_unauthorized(response)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            checked += 1
    assert checked == 15
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer-token cpzy_x_y",
        "Bearer two tokens",
        "Bearer " + "x" * 600,
    ],
)
def test_malformed_authorization_is_401(client: TestClient, authorization: str) -> None:
    response = client.get(EXECUTIONS, headers={"Authorization": authorization})
    _assert_unauthorized(response)


def test_unknown_key_is_401_invalid_token(client: TestClient, admin: Any) -> None:
    _, plaintext = new_api_key(admin.user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)  # never stored
    response = client.get(EXECUTIONS, headers={"Authorization": f"Bearer {plaintext}"})
    _assert_unauthorized(response)
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # A stored key's prefix with a wrong secret is no better.
    forged = admin.plaintext[:-4] + ("AAAA" if not admin.plaintext.endswith("AAAA") else "BBBB")
    _assert_unauthorized(client.get(EXECUTIONS, headers={"Authorization": f"Bearer {forged}"}))


def test_scheme_is_case_insensitive(client: TestClient, admin: Any) -> None:
    response = client.get(EXECUTIONS, headers={"Authorization": f"bearer {admin.plaintext}"})
    assert response.status_code == 200


def test_deleted_key_is_refused_at_once_even_though_it_was_cached(
    client: TestClient, admin: Any, compozy_store: Store
) -> None:
    assert client.get(EXECUTIONS, headers=admin.headers).status_code == 200  # now cached
    compozy_store.auth.delete_api_key(admin.key.id, force=True)  # the only admin key
    _assert_unauthorized(client.get(EXECUTIONS, headers=admin.headers))


def test_deleted_user_keys_are_refused(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    compozy_store.auth.delete_user(member.user.id)
    _assert_unauthorized(client.get(EXECUTIONS, headers=member.headers))


ADMIN_ROUTES = [
    ("POST", USERS, {"email": "new@example.com"}),
    ("GET", USERS, None),
    ("DELETE", USERS + "/{other}", None),
    ("POST", USERS + "/{other}/api-keys", None),
    ("GET", USERS + "/{other}/api-keys", None),
    ("DELETE", "/api/v0/api-keys/{other_key}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_non_admin_gets_403_on_admin_routes_and_nothing_changes(
    client: TestClient,
    member: Any,
    admin: Any,
    compozy_store: Store,
    method: str,
    path: str,
    body: Any,
) -> None:
    url = path.format(other=admin.user.id, other_key=admin.key.id)
    response = client.request(method, url, headers=member.headers, json=body)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"
    assert member.user.id in response.json()["error"]["message"]
    # The refused request wrote nothing.
    assert {u.id for u in compozy_store.auth.list_users()} == {admin.user.id, member.user.id}
    assert [k.id for k in compozy_store.auth.list_api_keys_by_user_id(admin.user.id)] == [
        admin.key.id
    ]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_admin_passes_admin_routes(
    client: TestClient,
    admin: Any,
    member: Any,
    method: str,
    path: str,
    body: Any,
) -> None:
    url = path.format(other=member.user.id, other_key=member.key.id)
    response = client.request(method, url, headers=admin.headers, json=body)
    assert response.status_code == {"POST": 201, "GET": 200, "DELETE": 204}[method], response.text


def test_non_admin_can_read_executions(client: TestClient, member: Any) -> None:
    response = client.get(EXECUTIONS, headers=member.headers)
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_verified_request_updates_last_used(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    assert compozy_store.auth.get_api_key_by_id(member.key.id).last_used is None
    assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    first = compozy_store.auth.get_api_key_by_id(member.key.id).last_used
    assert first is not None
    assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    second = compozy_store.auth.get_api_key_by_id(member.key.id).last_used
    assert second is not None
    assert second >= first


def test_refused_request_does_not_touch_last_used(
    client: TestClient, member: Any, compozy_store: Store
) -> None:
    assert client.get(EXECUTIONS, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert compozy_store.auth.get_api_key_by_id(member.key.id).last_used is None


def _count_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = verify_api_key

    def counting(plaintext: str, key: APIKey) -> bool:
        calls.append(key.id)
        return real(plaintext, key)

    monkeypatch.setattr(api_auth, "verify_api_key", counting)
    return calls


def test_bcrypt_runs_once_per_key_per_app(
    compozy_store: Store,
    app_factory: Any,
    member: Any,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_bcrypt(monkeypatch)
    with TestClient(app_factory(compozy_store)) as client:
        for _ in range(3):
            assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
            assert client.get(EXECUTIONS, headers=admin.headers).status_code == 200
    assert sorted(calls) == sorted([member.key.id, admin.key.id])
    # The cache belongs to the app: another app verifies again.
    with TestClient(app_factory(compozy_store)) as client:
        assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
    assert calls.count(member.key.id) == 2


def test_cache_is_bounded_and_evicts_least_recently_used(
    compozy_store: Store,
    app_factory: Any,
    member: Any,
    admin: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_bcrypt(monkeypatch)
    app = app_factory(compozy_store, key_cache_size=1)
    with TestClient(app) as client:
        for _ in range(2):
            assert client.get(EXECUTIONS, headers=member.headers).status_code == 200
            assert client.get(EXECUTIONS, headers=admin.headers).status_code == 200
    assert len(calls) == 4  # each evicts the other
    assert len(app.state.compozy.authenticator.cache) == 1


def test_a_failed_bcrypt_check_is_never_cached(
    compozy_store: Store, app_factory: Any, member: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stored key whose fingerprint matches the plaintext but whose hash is another key's:
    # only bcrypt can tell, and it must say no every time.
    other, _ = new_api_key(member.user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    _, plaintext = new_api_key(member.user.id, bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    compozy_store.auth.create_api_key(
        APIKey(
            user_id=member.user.id,
            prefix="mismatch",
            hash=other.hash,
            fingerprint=fingerprint(plaintext),
        )
    )
    calls = _count_bcrypt(monkeypatch)
    app = app_factory(compozy_store)
    with TestClient(app) as client:
        for _ in range(2):
            _assert_unauthorized(
                client.get(EXECUTIONS, headers={"Authorization": f"Bearer {plaintext}"})
            )
    assert len(calls) == 2
    assert len(app.state.compozy.authenticator.cache) == 0


def test_cache_hit_needs_the_same_stored_hash() -> None:
    key, _ = new_api_key("u1", bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    cache = VerifiedKeyCache(4)
    assert not cache.has_passed(key)
    cache.remember(key)
    assert cache.has_passed(key)
    rehashed = APIKey(user_id="u1", prefix=key.prefix, hash=b"another", fingerprint=key.fingerprint)
    assert not cache.has_passed(rehashed)


def test_cache_of_size_zero_remembers_nothing() -> None:
    key, _ = new_api_key("u1", bcrypt_rounds=TEST_BCRYPT_ROUNDS)
    cache = VerifiedKeyCache(0)
    cache.remember(key)
    assert not cache.has_passed(key)
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedKeyCache(-1)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("  bearer   abc  ", "abc"), ("BEARER cpzy_a_b", "cpzy_a_b")],
)
def test_parse_bearer_accepts(header: str, token: str) -> None:
    assert parse_bearer(header) == token


@pytest.mark.parametrize("header", [None, "", "  ", "Token abc", "Bearer a b", "Bearer"])
def test_parse_bearer_refuses(header: str | None) -> None:
    with pytest.raises(ApiError) as refused:
        parse_bearer(header)
    assert refused.value.status_code == 401
    assert refused.value.headers is not None
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
