"""Users, tokens and the audit log, kept in SQLite (or PostgreSQL with the postgres store).

Small and synchronous underneath; :class:`Accounts` runs each call in a worker
thread so the event loop never waits on the database or on argon2. Tables are
prefixed ``web_`` and live beside the history store's tables (same SQLite file
or PostgreSQL database) unless ``web.accounts_path`` names another file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fleetwatch.config import Config
from fleetwatch.errors import Misuse, ServiceUnavailable
from web.auth import Principal, hash_password, hash_token, new_token, verify_password

__all__ = ["Accounts"]

T = TypeVar("T")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS web_users (
        username TEXT PRIMARY KEY, org TEXT NOT NULL, role TEXT NOT NULL,
        pw_hash TEXT NOT NULL, created_at BIGINT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE)""",
    """CREATE TABLE IF NOT EXISTS web_tokens (
        id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, username TEXT, name TEXT NOT NULL,
        org TEXT NOT NULL, role TEXT NOT NULL, created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS web_audit (
        ts BIGINT NOT NULL, actor TEXT NOT NULL, org TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS web_audit_ts ON web_audit (ts)",
)


class _Db:
    """The few statements we need, on sqlite3 or psycopg (qmark → format placeholders)."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        if kind == "postgres":
            import psycopg

            try:
                self._pg = psycopg.connect(target, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError as exc:
                raise ServiceUnavailable("postgresql", str(exc)) from exc
        else:
            self._sq = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._sq.execute("PRAGMA busy_timeout = 5000")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if self.kind == "postgres":
                with self._pg.cursor() as pc:
                    pc.execute(sql.replace("?", "%s"), tuple(args))
                    return list(pc.fetchall()) if pc.description else []
            return self._sq.execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        with self._lock:
            if self.kind == "postgres":
                self._pg.close()
            else:
                self._sq.close()


class Accounts:
    """Users (argon2 passwords), expiring tokens, static config tokens, the audit log."""

    def __init__(self, config: Config, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.clock_ms = clock_ms
        self._db: _Db | None = None
        self._static = {
            hash_token(t.token): Principal(
                name=t.name or f"token:{t.token[:4]}…", org=t.org, role=t.role
            )
            for t in config.web.tokens
        }

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    def _conn(self) -> _Db:
        if self._db is None:
            raise Misuse("Accounts.open() was not called")
        return self._db

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which uses :meth:`database`) in a worker thread."""
        return await self._run(fn)

    def database(self) -> _Db:
        """The open connection, for other ``web_`` tables (:mod:`web.records`)."""
        return self._conn()

    async def open(self) -> None:
        """Connect, create the tables, and add the users from ``[[web.users]]`` that are missing."""
        st = self.config.store
        web = self.config.web
        if st.kind == "postgres" and not web.accounts_path:
            kind, target = "postgres", st.postgres_dsn
        elif web.accounts_path:
            kind, target = "sqlite", web.accounts_path
        elif st.kind == "sqlite":
            kind, target = "sqlite", st.sqlite_path
        else:
            kind, target = "sqlite", ":memory:"

        def setup() -> _Db:
            db = _Db(kind, target)
            for stmt in _SCHEMA:
                db.execute(stmt)
            return db

        self._db = await self._run(setup)
        for u in web.users:
            if await self.user(u.username) is None:
                pw = u.password
                await self.create_user(
                    u.username, pw, u.org, u.role, pre_hashed=pw.startswith("$argon2")
                )

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    # -- users ------------------------------------------------------------------------------

    async def create_user(
        self, username: str, password: str, org: str, role: str, *, pre_hashed: bool = False
    ) -> bool:
        """False if the user name is taken."""
        db = self._conn()
        now = self.clock_ms()

        def do() -> bool:
            if db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)):
                return False
            pw = password if pre_hashed else hash_password(password)
            db.execute(
                "INSERT INTO web_users (username, org, role, pw_hash, created_at, disabled)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (username, org, role, pw, now, False),
            )
            return True

        return await self._run(do)

    async def user(self, username: str) -> dict[str, Any] | None:
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT username, org, role, created_at, disabled FROM web_users"
                " WHERE username = ?",
                (username,),
            )
        )
        return _user(rows[0]) if rows else None

    async def users(self, orgs: frozenset[str]) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT username, org, role, created_at, disabled FROM web_users ORDER BY username"
            )
        )
        return [_user(r) for r in rows if r[1] in orgs]

    async def update_user(
        self,
        username: str,
        *,
        password: str | None = None,
        role: str | None = None,
        org: str | None = None,
        disabled: bool | None = None,
    ) -> bool:
        db = self._conn()

        def do() -> bool:
            if not db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)):
                return False
            if password is not None:
                db.execute(
                    "UPDATE web_users SET pw_hash = ? WHERE username = ?",
                    (hash_password(password), username),
                )
            for col, val in (("role", role), ("org", org), ("disabled", disabled)):
                if val is not None:
                    db.execute(
                        f"UPDATE web_users SET {col} = ? WHERE username = ?", (val, username)
                    )
            if disabled or role is not None or org is not None or password is not None:
                # a changed or disabled account must log in again
                db.execute("DELETE FROM web_tokens WHERE username = ?", (username,))
            return True

        return await self._run(do)

    async def delete_user(self, username: str) -> bool:
        db = self._conn()

        def do() -> bool:
            found = bool(db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)))
            db.execute("DELETE FROM web_tokens WHERE username = ?", (username,))
            db.execute("DELETE FROM web_users WHERE username = ?", (username,))
            return found

        return await self._run(do)

    async def check_password(self, username: str, password: str) -> Principal | None:
        """The user's principal if the password is right and the account enabled."""
        db = self._conn()

        def do() -> Principal | None:
            rows = db.execute(
                "SELECT org, role, pw_hash, disabled FROM web_users WHERE username = ?",
                (username,),
            )
            if not rows:
                verify_password(_DUMMY_HASH, password)  # same time for unknown users
                return None
            org, role, pw_hash, disabled = rows[0]
            if disabled or not verify_password(pw_hash, password):
                return None
            return Principal(name=username, org=org, role=role, username=username)

        return await self._run(do)

    # -- tokens -----------------------------------------------------------------------------

    async def issue_token(
        self, principal: Principal, ttl_s: int, name: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """A new token carrying ``principal``'s org and role; returns (token, its record)."""
        token = new_token()
        now = self.clock_ms()
        rec = {
            "id": hash_token(token)[:16],
            "name": name or principal.name,
            "username": principal.username,
            "org": principal.org,
            "role": principal.role,
            "created_at": now,
            "expires_at": now + ttl_s * 1000,
        }
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO web_tokens (id, token_hash, username, name, org, role, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec["id"],
                    hash_token(token),
                    rec["username"],
                    rec["name"],
                    rec["org"],
                    rec["role"],
                    rec["created_at"],
                    rec["expires_at"],
                ),
            )
        )
        return token, rec

    async def principal(self, token: str) -> Principal | None:
        """Who holds ``token``: a config token, or an issued one not yet expired."""
        h = hash_token(token)
        static = self._static.get(h)
        if static is not None:
            return static
        now = self.clock_ms()
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT id, username, name, org, role FROM web_tokens"
                " WHERE token_hash = ? AND expires_at > ?",
                (h, now),
            )
        )
        if not rows:
            return None
        tid, username, name, org, role = rows[0]
        return Principal(name=username or name, org=org, role=role, username=username, token_id=tid)

    async def tokens(self, orgs: frozenset[str]) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT id, name, username, org, role, created_at, expires_at FROM web_tokens"
                " ORDER BY created_at"
            )
        )
        keys = ("id", "name", "username", "org", "role", "created_at", "expires_at")
        return [dict(zip(keys, r, strict=True)) for r in rows if r[3] in orgs]

    async def token_org(self, token_id: str) -> str | None:
        rows = await self._run(
            lambda: self._conn().execute("SELECT org FROM web_tokens WHERE id = ?", (token_id,))
        )
        return str(rows[0][0]) if rows else None

    async def revoke_token(self, token_id: str) -> bool:
        db = self._conn()

        def do() -> bool:
            found = bool(db.execute("SELECT 1 FROM web_tokens WHERE id = ?", (token_id,)))
            db.execute("DELETE FROM web_tokens WHERE id = ?", (token_id,))
            return found

        return await self._run(do)

    async def purge_expired(self) -> None:
        now = self.clock_ms()
        await self._run(
            lambda: self._conn().execute("DELETE FROM web_tokens WHERE expires_at <= ?", (now,))
        )

    # -- audit ------------------------------------------------------------------------------

    async def audit(
        self, actor: Principal, action: str, target: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record one operator action. Never skipped: a failure here fails the request."""
        now = self.clock_ms()
        text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True)
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO web_audit (ts, actor, org, action, target, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now, actor.name, actor.org, action, target, text),
            )
        )

    async def audit_log(
        self,
        orgs: frozenset[str],
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        action: str | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT ts, actor, org, action, target, detail FROM web_audit WHERE ts >= ? AND ts < ?"
        )
        args: list[Any] = [from_ms or 0, to_ms or 2**62]
        if action:
            sql += " AND action = ?"
            args.append(action)
        sql += " ORDER BY ts DESC"
        rows = await self._run(lambda: self._conn().execute(sql, args))
        out = []
        for ts, actor, org, act, target, detail in rows:
            if org in orgs:
                out.append(
                    {
                        "ts": ts,
                        "actor": actor,
                        "org": org,
                        "action": act,
                        "target": target,
                        "detail": json.loads(detail),
                    }
                )
                if len(out) >= limit:
                    break
        return out


_DUMMY_HASH = hash_password("not a real password")


def _user(r: Sequence[Any]) -> dict[str, Any]:
    return {"username": r[0], "org": r[1], "role": r[2], "created_at": r[3], "disabled": bool(r[4])}
