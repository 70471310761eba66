"""API keys: generated with 256 bits of entropy and stored only as sha256.

A plain sha256 (no salt, no slow hash) is enough because the keys are random, not chosen by people: there is
no dictionary to attack, and a fast hash keeps authentication a single indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "gisp_"


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_display_prefix(key: str) -> str:
    """The first characters of a key, kept in clear so an operator can tell keys apart."""
    return key[: len(KEY_PREFIX) + 6]


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
