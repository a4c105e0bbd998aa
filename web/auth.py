"""Who may see what: principals, roles, password hashing, login rate limiting.

Roles are ordered: ``viewer`` < ``operator`` (acknowledges and handles alarms,
manages dispatch orders) < ``admin`` (configuration: fences, users, tokens). A
principal belongs to an organisation and sees only that organisation's subtree.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "ROLES",
    "LoginLimiter",
    "Principal",
    "hash_password",
    "hash_token",
    "new_token",
    "role_at_least",
    "verify_password",
]

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")

# argon2id with the library's defaults (RFC 9106 "second recommended" profile, 64 MiB).
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``username``) or a machine token (``username`` None)."""

    name: str
    org: str
    role: str
    username: str | None = None
    token_id: str | None = None

    def may(self, role: str) -> bool:
        return role_at_least(self.role, role)


def role_at_least(have: str, need: str) -> bool:
    return ROLES.index(have) >= ROLES.index(need)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches the argon2 hash ``stored``."""
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return "fw_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Tokens are stored hashed: a leaked database holds no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


class LoginLimiter:
    """At most ``per_minute`` failed logins per key (user name, client address) in 60 s.

    Pure: the caller passes ``now_ms``.
    """

    def __init__(self, per_minute: int, window_ms: int = 60_000) -> None:
        self.per_minute = per_minute
        self.window_ms = window_ms
        self._fails: dict[str, deque[int]] = {}

    def blocked(self, keys: tuple[str, ...], now_ms: int) -> bool:
        return any(len(self._recent(k, now_ms)) >= self.per_minute for k in keys)

    def failed(self, keys: tuple[str, ...], now_ms: int) -> None:
        for k in keys:
            self._recent(k, now_ms).append(now_ms)
        if len(self._fails) > 10_000:  # forget idle keys, bounded memory under a spray
            for k in [k for k, q in self._fails.items() if not q]:
                del self._fails[k]

    def succeeded(self, keys: tuple[str, ...]) -> None:
        self._fails.pop(keys[0], None)

    def _recent(self, key: str, now_ms: int) -> deque[int]:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now_ms - self.window_ms:
            q.popleft()
        return q
