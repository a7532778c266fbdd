"""Bearer API-key authentication, with an in-process cache of bcrypt verdicts.

Every request looks its key up by fingerprint (SHA-256 of the plaintext) in the database, so a
deleted key or user is refused at once. The bcrypt check (about 0.3 s at the production work
factor) is what the cache spares: it remembers, per fingerprint, the stored hash that the
plaintext was found to match. A hit needs the same fingerprint, which only that plaintext has,
and the same stored hash, so the cache can only repeat a verdict the database still supports;
it is never consulted before the database lookup and holds no plaintext.

``last_used`` is written when the stored value is older than ``LAST_USED_PRECISION`` (a
minute), not at every request: a request is then a read only, and a client polling many times
a second does not queue a write per poll behind the workflow engine's (SQLite has one writer).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta

from compozy.api.errors import ApiError
from compozy.auth import APIKey, Role, User
from compozy.auth.keys import fingerprint, verify_api_key
from compozy.core.values import utc_now
from compozy.errors import NotFoundError
from compozy.store import Store

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "LAST_USED_PRECISION",
    "MAX_TOKEN_LENGTH",
    "Authenticator",
    "Principal",
    "VerifiedKeyCache",
    "parse_bearer",
]

DEFAULT_CACHE_SIZE = 1024
MAX_TOKEN_LENGTH = 512  # real keys are 58 characters; anything far longer is not one
LAST_USED_PRECISION = timedelta(minutes=1)
"""An API key's ``last_used`` is at most this much older than its latest request."""


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's owner and the key (``last_used`` within a minute)."""

    user: User
    key: APIKey

    @property
    def is_admin(self) -> bool:
        """True for users with the admin role."""
        return self.user.role is Role.ADMIN


class VerifiedKeyCache:
    """fingerprint -> the stored bcrypt hash its plaintext matched; least recently used go first.

    Thread-safe: sync routes run in a thread pool and share one cache per app.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_SIZE) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, not {max_entries}")
        self._max = max_entries
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def has_passed(self, key: APIKey) -> bool:
        """True if the plaintext with this key's fingerprint matched this very hash before."""
        with self._lock:
            cached = self._entries.get(key.fingerprint)
            if cached is None or cached != key.hash:
                return False
            self._entries.move_to_end(key.fingerprint)
            return True

    def remember(self, key: APIKey) -> None:
        """Record that bcrypt accepted the plaintext for ``key``."""
        if self._max == 0:
            return
        with self._lock:
            self._entries[key.fingerprint] = key.hash
            self._entries.move_to_end(key.fingerprint)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)


def _unauthorized(message: str, *, invalid_token: bool) -> ApiError:
    # RFC 6750: a challenge on every 401; error="invalid_token" when a token was sent but refused.
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return ApiError(401, "Unauthorized", message, {"WWW-Authenticate": challenge})


def parse_bearer(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; ``ApiError`` 401 otherwise."""
    if authorization is None or not authorization.strip():
        raise _unauthorized(
            "this route needs an API key: send 'Authorization: Bearer <api key>'",
            invalid_token=False,
        )
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(ch.isspace() for ch in token):
        raise _unauthorized(
            "the Authorization header is malformed: send 'Authorization: Bearer <api key>'",
            invalid_token=True,
        )
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid_key()
    return token


def _invalid_key() -> ApiError:
    # One message for unknown, deleted and wrong keys: a caller learns nothing about which.
    return _unauthorized("the API key is not valid", invalid_token=True)


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal` or a 401."""

    def __init__(self, store: Store, cache: VerifiedKeyCache | None = None) -> None:
        self._store = store
        self.cache = cache if cache is not None else VerifiedKeyCache()

    def authenticate(self, authorization: str | None) -> Principal:
        """Verify the bearer key, record its use, and return who it belongs to."""
        token = parse_bearer(authorization)
        auth = self._store.auth
        try:
            key = auth.get_api_key_by_fingerprint(fingerprint(token))
        except NotFoundError:
            raise _invalid_key() from None
        if not self.cache.has_passed(key):
            if not verify_api_key(token, key):
                raise _invalid_key()
            self.cache.remember(key)
        try:
            user = auth.get_user_by_id(key.user_id)
            if key.last_used is None or utc_now() - key.last_used >= LAST_USED_PRECISION:
                key = auth.update_api_key_last_used(key.id)
        except NotFoundError:  # deleted between the lookup and now
            raise _invalid_key() from None
        return Principal(user=user, key=key)
