"""The production bcrypt cost: tests inject a low one everywhere else, so it is pinned here."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from compozy.api.app import create_app
from compozy.auth.keys import BCRYPT_ROUNDS, new_api_key, verify_api_key
from compozy.cli.main import main
from compozy.config import load_config
from compozy.config.loader import ENV_VARS
from compozy.store import open_store


def test_keys_are_hashed_with_cost_12_unless_told_otherwise() -> None:
    assert BCRYPT_ROUNDS == 12
    key, plaintext = new_api_key("user-1")
    assert key.hash.startswith(b"$2b$12$")
    assert verify_api_key(plaintext, key)


def test_the_api_hashes_new_keys_with_the_production_cost_by_default() -> None:
    assert inspect.signature(create_app).parameters["bcrypt_rounds"].default == BCRYPT_ROUNDS


def test_compozy_init_stores_the_admin_key_at_the_production_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert main(["init", str(tmp_path / "project")]) == 0
    capsys.readouterr()
    with open_store(load_config(tmp_path / "project" / "compozy.yaml").database) as store:
        (admin,) = store.auth.list_users()
        (key,) = store.auth.list_api_keys_by_user_id(admin.id)
    assert key.hash.startswith(b"$2b$12$")
