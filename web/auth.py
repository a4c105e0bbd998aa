"""Who may see what: principals, roles, password hashing, login rate limiting.

Roles are ordered: ``viewer`` < ``operator`` (acknowledges and handles alarms,
manages dispatch orders) < ``admin`` (configuration: fences, users, tokens). A
principal belongs to an organisation and sees only that organisation's subtree.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "DUTIES",
    "ROLES",
    "LoginLimiter",
    "Principal",
    "Refused",
    "Session",
    "hash_password",
    "hash_token",
    "new_token",
    "role_at_least",
    "slid_expiry",
    "verify_password",
]

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
#: What a user does in the dispatch-order flow (#16), besides their role: files requests
#: (用车申请), approves them (审批), assigns vehicles and drivers (调度). Any subset.
DUTIES: tuple[str, ...] = ("requester", "approver", "dispatcher")

# argon2id with the library's defaults (RFC 9106 "second recommended" profile, 64 MiB).
_hasher = PasswordHasher()


@dataclass(frozen=True, slots=True)
class Session:
    """A login session's state as ``GET /api/me`` shows it (epoch ms)."""

    expires_at: int
    absolute_expires_at: int
    room: bool = False
    duty_operator: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (``username``) or a machine token (``username`` None)."""

    name: str
    org: str
    role: str
    username: str | None = None
    token_id: str | None = None
    session: Session | None = None  # a login session (None: config or machine token)
    duties: frozenset[str] = frozenset()  # DUTIES this user holds (a token: none)

    def may(self, role: str) -> bool:
        return role_at_least(self.role, role)

    def has(self, duty: str) -> bool:
        return duty in self.duties


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


@dataclass
class _Pair:
    attempts: int = 0
    last_ms: int = 0


class LoginLimiter:
    """Login attempts per (user name, client address), counted when they arrive.

    Pure: the caller passes ``now_ms``. Call :meth:`admit` before the password is
    hashed: it counts the attempt at once, so a burst of concurrent guesses is
    limited exactly like the same guesses one after the other. Then call
    :meth:`failed`, :meth:`succeeded` or (when the attempt was never tried, e.g. the
    hashing pool was busy) :meth:`withdrawn`.

    A (user, address) gets ``free_attempts`` tries; after that each further try
    must wait ``delay_ms``, doubling up to ``max_delay_ms``. There is no hard lock:
    a stranger guessing from one address slows only that address's tries for that
    user, and the real user from another address still logs in. One address trying
    many user names is capped at ``per_address_per_min`` unsuccessful tries a minute.
    """

    def __init__(
        self,
        *,
        free_attempts: int = 5,
        delay_ms: int = 1000,
        max_delay_ms: int = 900_000,
        forget_ms: int = 3_600_000,
        per_address_per_min: int = 30,
        max_keys: int = 100_000,
    ) -> None:
        self.free_attempts = free_attempts
        self.delay_ms = delay_ms
        self.max_delay_ms = max_delay_ms
        self.forget_ms = forget_ms
        self.per_address_per_min = per_address_per_min
        self.max_keys = max_keys
        self._pairs: OrderedDict[tuple[str, str], _Pair] = OrderedDict()
        self._addresses: OrderedDict[str, deque[int]] = OrderedDict()

    def delay_after(self, attempts: int) -> int:
        """Milliseconds to wait after ``attempts`` counted tries before the next one."""
        if attempts < self.free_attempts:
            return 0
        exp = min(attempts - self.free_attempts, 40)  # 2**40 ms is far past any cap
        return int(min(self.delay_ms * 2**exp, self.max_delay_ms))

    def admit(self, user: str, address: str, now_ms: int) -> int:
        """0 if this attempt may go on (it is counted now); else milliseconds to wait."""
        pair = self._pairs.get((user, address))
        if pair is not None and now_ms - pair.last_ms >= self.forget_ms:
            pair = None
            del self._pairs[(user, address)]
        wait = 0
        if pair is not None:
            wait = pair.last_ms + self.delay_after(pair.attempts) - now_ms
        tries = self._recent(address, now_ms)
        if len(tries) >= self.per_address_per_min:
            wait = max(wait, tries[0] + 60_000 - now_ms)
        if wait > 0:
            return wait
        if pair is None:
            pair = self._pairs[(user, address)] = _Pair()
        pair.attempts += 1
        pair.last_ms = now_ms
        self._pairs.move_to_end((user, address))
        tries.append(now_ms)
        self._addresses.move_to_end(address)
        self._bound()
        return 0

    def failed(self, user: str, address: str, now_ms: int) -> None:
        """The admitted attempt had a wrong password (it stays counted)."""

    def succeeded(self, user: str, address: str) -> None:
        """The admitted attempt logged in: this (user, address) starts over."""
        self._pairs.pop((user, address), None)
        tries = self._addresses.get(address)
        if tries:
            tries.pop()

    def withdrawn(self, user: str, address: str) -> None:
        """The admitted attempt was never tried (hashing busy): uncount it."""
        pair = self._pairs.get((user, address))
        if pair is not None and pair.attempts > 0:
            pair.attempts -= 1
        tries = self._addresses.get(address)
        if tries:
            tries.pop()

    def _recent(self, address: str, now_ms: int) -> deque[int]:
        q = self._addresses.get(address)
        if q is None:
            q = self._addresses[address] = deque()
        while q and q[0] <= now_ms - 60_000:
            q.popleft()
        return q

    def _bound(self) -> None:
        """Bounded memory under a spray of names or addresses: forget the oldest."""
        while len(self._pairs) > self.max_keys:
            self._pairs.popitem(last=False)
        while len(self._addresses) > self.max_keys:
            self._addresses.popitem(last=False)


def slid_expiry(now_ms: int, idle_ms: int, absolute_ms: int) -> int:
    """Where a session's expiry moves on use: ``idle_ms`` ahead, never past its cap."""
    return min(now_ms + idle_ms, absolute_ms)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a token gives no principal: ``unauthorized`` (unknown), ``session_expired``
    or ``session_revoked`` (logout, revocation, account disabled or deleted)."""

    reason: str
