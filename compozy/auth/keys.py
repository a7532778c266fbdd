"""API keys ``cpzy_<prefix>_<secret>``: made, stored as fingerprint + bcrypt hash, checked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

import bcrypt

from compozy.auth import APIKey

__all__ = ["BCRYPT_ROUNDS", "TEST_BCRYPT_ROUNDS", "fingerprint", "new_api_key", "verify_api_key"]

_ALPHABET = string.ascii_letters + string.digits
_PREFIX_LENGTH = 12
_SECRET_LENGTH = 40
_SCHEME = "cpzy"


def _random_text(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def fingerprint(plaintext: str) -> bytes:
    """SHA-256 of the plaintext key: the value keys are looked up by."""
    return hashlib.sha256(plaintext.encode()).digest()


BCRYPT_ROUNDS = 12
TEST_BCRYPT_ROUNDS = 4
"""bcrypt's minimum work factor: for test data only, where each hash would otherwise cost ~0.3 s."""


def new_api_key(user_id: str, *, bcrypt_rounds: int = BCRYPT_ROUNDS) -> tuple[APIKey, str]:
    """A new key for ``user_id`` and its plaintext, which is shown once and never stored."""
    prefix = _random_text(_PREFIX_LENGTH)
    plaintext = f"{_SCHEME}_{prefix}_{_random_text(_SECRET_LENGTH)}"
    key = APIKey(
        user_id=user_id,
        prefix=prefix,
        hash=bcrypt.hashpw(plaintext.encode(), bcrypt.gensalt(bcrypt_rounds)),
        fingerprint=fingerprint(plaintext),
    )
    return key, plaintext


def verify_api_key(plaintext: str, key: APIKey) -> bool:
    """True when ``plaintext`` is the key that ``key`` was made from."""
    if not hmac.compare_digest(fingerprint(plaintext), key.fingerprint):
        return False
    return bcrypt.checkpw(plaintext.encode(), key.hash)
