"""Fixtures for the HTTP API tests: an app over the backend's store, a client, and callers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from compozy.api import create_app
from compozy.auth import APIKey, Role, User
from compozy.auth.keys import TEST_BCRYPT_ROUNDS
from compozy.core import new_id
from compozy.errors import NotFoundError
from compozy.store import Store


class UnknownWorkflowStub(NotFoundError):
    """Stands in for compozy.engine.UnknownWorkflow, which subclasses NotFoundError too."""


@dataclass
class RecordingStarter:
    """An ``ExecutionStarter`` test double: knows some workflow ids, records every start."""

    known: set[str] = field(default_factory=lambda: {"hello"})
    calls: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    error: Exception | None = None

    @property
    def definitions(self) -> dict[str, Any]:
        return {}

    def start(self, workflow_id: str, input: dict[str, Any] | None) -> str:
        if self.error is not None:
            raise self.error
        if workflow_id not in self.known:
            raise UnknownWorkflowStub(f"workflow {workflow_id!r} is not defined")
        self.calls.append((workflow_id, input))
        return new_id()


@dataclass(frozen=True)
class Caller:
    """A stored user, one of their keys, and the headers that authenticate as them."""

    user: User
    key: APIKey
    plaintext: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plaintext}"}


def _build_app(store: Store, **options: Any) -> FastAPI:
    # Keys made through the app use bcrypt's cheapest work factor: test data only.
    options.setdefault("bcrypt_rounds", TEST_BCRYPT_ROUNDS)
    return create_app(store, **options)


@pytest.fixture
def app_factory() -> Callable[..., FastAPI]:
    """``app_factory(store, **create_app_options)``: another app, as the tests configure it."""
    return _build_app


@pytest.fixture
def caller_factory(user_factory: Any, api_key_factory: Any) -> Callable[[Role], Caller]:
    """``caller_factory(role)``: a new stored user with that role and a key for them."""

    def make(role: Role) -> Caller:
        user = user_factory.create(role=role)
        key, plaintext = api_key_factory.create_with_plaintext(user=user)
        return Caller(user=user, key=key, plaintext=plaintext)

    return make


@pytest.fixture
def starter() -> RecordingStarter:
    """The app's engine double."""
    return RecordingStarter()


@pytest.fixture
def app(compozy_store: Store, starter: RecordingStarter) -> FastAPI:
    """The API over this backend's store."""
    return _build_app(compozy_store, engine=starter)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client that raises any server-side exception instead of hiding it in a 500."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def admin(caller_factory: Callable[[Role], Caller]) -> Caller:
    """An admin and their key."""
    return caller_factory(Role.ADMIN)


@pytest.fixture
def member(caller_factory: Callable[[Role], Caller]) -> Caller:
    """A non-admin user and their key."""
    return caller_factory(Role.USER)
