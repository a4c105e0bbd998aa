"""Where the gateway keeps which terminals registered (0x0100), across restarts and nodes.

A terminal registers once in its life (JT/T 808-2019 §8.5: it keeps the auth
code and afterwards only authenticates), so the store holds, per terminal
phone, whether it is registered and how many times it has been (the
*registration number*, part of its auth code). :meth:`claim` is atomic: of two
gateway nodes racing for one phone, one wins. An operator's ``fleetwatch
gateway reset-terminal PHONE`` (:meth:`reset`) lets the terminal register
again, with a new code.

Two back ends: ``sqlite:PATH`` (one host; several gateway processes may share
the file) and ``redis://`` (several nodes). Both are adapters: the pure
session core (:mod:`ingest.jt808.session`) only asks and is told.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions

from fleet.errors import ServiceUnavailable
from fleet.threads import to_thread_holding
from ingest.jt808.config import GatewayConfig
from ingest.jt808.session import canonical_phone

__all__ = [
    "RedisRegistrations",
    "RegistrationStore",
    "SqliteRegistrations",
    "open_registrations",
]


class RegistrationStore(Protocol):
    async def claim(self, phone: str) -> int | None:
        """Register ``phone`` if it is not registered: its new registration number, else None."""

    async def current(self, phone: str) -> int | None:
        """``phone``'s registration number while it is registered, else None."""

    async def reset(self, phone: str) -> bool:
        """Let ``phone`` register again; False if it was not registered."""

    async def close(self) -> None: ...


def open_registrations(cfg: GatewayConfig) -> RegistrationStore:
    """The store ``cfg.registrations`` names."""
    url = cfg.registrations
    if url.startswith("sqlite:"):
        return SqliteRegistrations(url.removeprefix("sqlite:").removeprefix("//"))
    return RedisRegistrations(url, cfg.registrations_prefix)


class SqliteRegistrations:
    """Registrations in an SQLite file (WAL, so several processes on one host may share it)."""

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS terminal_registrations (
            phone TEXT PRIMARY KEY,
            registration INTEGER NOT NULL,
            registered INTEGER NOT NULL,
            changed_ms INTEGER NOT NULL
        )
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA busy_timeout=5000")
                db.execute(self._SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise ServiceUnavailable(f"registrations {self.path}", repr(exc)) from exc
            self._db = db
        return self._db

    async def _run(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        def step() -> list[tuple[object, ...]]:
            db = self._open()
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise ServiceUnavailable(f"registrations {self.path}", repr(exc)) from exc

        # one statement at a time on the shared connection
        return await to_thread_holding(self._lock, step)

    async def claim(self, phone: str) -> int | None:
        # One statement, so atomic across processes: insert the first registration, or
        # bump the number of a reset one; a registered row is left alone (no row back).
        rows = await self._run(
            """INSERT INTO terminal_registrations VALUES (?, 1, 1, ?)
               ON CONFLICT (phone) DO UPDATE
                   SET registration = registration + 1, registered = 1,
                       changed_ms = excluded.changed_ms
                   WHERE registered = 0
               RETURNING registration""",
            canonical_phone(phone),
            int(time.time() * 1000),
        )
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    async def current(self, phone: str) -> int | None:
        rows = await self._run(
            "SELECT registration FROM terminal_registrations WHERE phone = ? AND registered = 1",
            canonical_phone(phone),
        )
        return int(rows[0][0]) if rows else None  # type: ignore[call-overload]

    async def reset(self, phone: str) -> bool:
        rows = await self._run(
            """UPDATE terminal_registrations SET registered = 0, changed_ms = ?
               WHERE phone = ? AND registered = 1 RETURNING phone""",
            int(time.time() * 1000),
            canonical_phone(phone),
        )
        return bool(rows)

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


class RedisRegistrations:
    """Registrations in Redis: ``{prefix}registered:{phone}`` holds the registration number
    while registered; ``{prefix}registration:{phone}`` counts registrations (kept on reset)."""

    def __init__(self, url: str, prefix: str = "fleetwatch:gateway:") -> None:
        self.url = url
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._claim = self._redis.register_script(self._CLAIM)

    def _keys(self, phone: str) -> tuple[str, str]:
        p = canonical_phone(phone)
        return f"{self.prefix}registered:{p}", f"{self.prefix}registration:{p}"

    # Atomic in Redis: of two nodes racing for one phone, one gets a number.
    _CLAIM = """
        if redis.call('EXISTS', KEYS[1]) == 1 then return false end
        local n = redis.call('INCR', KEYS[2])
        redis.call('SET', KEYS[1], n)
        return n
    """

    async def claim(self, phone: str) -> int | None:
        try:
            number = await self._claim(keys=list(self._keys(phone)))
        except redis.exceptions.RedisError as exc:
            raise ServiceUnavailable(f"Redis {self.url}", repr(exc)) from exc
        return None if number is None else int(number)

    async def current(self, phone: str) -> int | None:
        registered, _ = self._keys(phone)
        try:
            value = await self._redis.get(registered)
        except redis.exceptions.RedisError as exc:
            raise ServiceUnavailable(f"Redis {self.url}", repr(exc)) from exc
        return None if value is None else int(value)

    async def reset(self, phone: str) -> bool:
        registered, _ = self._keys(phone)
        try:
            return bool(await self._redis.delete(registered))
        except redis.exceptions.RedisError as exc:
            raise ServiceUnavailable(f"Redis {self.url}", repr(exc)) from exc

    async def close(self) -> None:
        await self._redis.aclose()
