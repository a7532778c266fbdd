"""KSUID identifiers: 27 base62 characters that sort by creation time (second resolution)."""

from __future__ import annotations

import secrets
import time

from compozy.errors import ValidationError

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_EPOCH = 1_400_000_000  # the KSUID epoch, 2014-05-13T16:53:20Z
_LENGTH = 27
_MAX = (1 << 160) - 1  # 4 bytes of timestamp + 16 bytes of payload


def new_id() -> str:
    """Return a new KSUID; ids made in a later second sort after earlier ones as text."""
    stamp = int(time.time()) - _EPOCH
    value = (stamp << 128) | int.from_bytes(secrets.token_bytes(16), "big")
    chars = []
    for _ in range(_LENGTH):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def parse_id(text: str) -> str:
    """Return ``text`` if it is a well-formed KSUID, else raise ``ValidationError``."""
    if not isinstance(text, str) or not text:
        raise ValidationError("id is empty: pass a KSUID such as one from compozy.core.new_id()")
    if len(text) != _LENGTH:
        raise ValidationError(f"id {text!r} is not a KSUID: it has {len(text)} characters, not 27")
    value = 0
    for char in text:
        digit = _INDEX.get(char)
        if digit is None:
            raise ValidationError(f"id {text!r} is not a KSUID: {char!r} is not a base62 character")
        value = value * 62 + digit
    if value > _MAX:
        raise ValidationError(f"id {text!r} is not a KSUID: its value exceeds 160 bits")
    return text
