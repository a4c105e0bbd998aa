"""Users, tokens and the audit log, kept in SQLite (or PostgreSQL with the postgres store).

Small and synchronous underneath; :class:`Accounts` runs each database call in a
worker thread so the event loop never waits on it. argon2 runs in its own small,
bounded pool (:class:`HashPool`): a burst of logins queues there, or is refused at
once, and never delays token checks, the history writer or ingest, which share
the default pool. Tables are
prefixed ``web_`` and live beside the history store's tables (same SQLite file
or PostgreSQL database) unless ``web.accounts_path`` names another file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from fleet.errors import Misuse, ServiceUnavailable
from web.auth import (
    DUTIES,
    Principal,
    Refused,
    Session,
    hash_password,
    hash_token,
    new_token,
    slid_expiry,
    verify_password,
)
from web.context import SiteConfig

__all__ = ["Accounts", "HashBusy", "HashPool"]

log = logging.getLogger(__name__)

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

# Columns added to web_tokens for sessions (older databases get them on open).
# kind: 'session' (a login, sliding expiry) or 'machine' (POST /api/tokens, fixed);
# expires_at is the current expiry, absolute_expires_at its cap.
_TOKEN_COLUMNS = (
    ("kind", "TEXT NOT NULL DEFAULT 'session'"),
    ("absolute_expires_at", "BIGINT NOT NULL DEFAULT 0"),
    ("room", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("duty_operator", "TEXT"),
    ("revoked_at", "BIGINT"),
    ("revoked_why", "TEXT"),
)

# Columns added to web_users (older databases get them on open). duties: the #16 duties
# (web.auth.DUTIES) as a comma-separated list, read again at every authentication.
_USER_COLUMNS = (("duties", "TEXT NOT NULL DEFAULT ''"),)

# An ended session is remembered this long after it ended, so that its holder hears
# "session_expired"/"session_revoked" rather than "unauthorized"; then it is purged.
_REMEMBER_ENDED_MS = 86_400_000


class HashBusy(ServiceUnavailable):
    """Every password-hashing thread is busy and its queue full: answer 503 at once."""


class HashPool:
    """argon2 in its own threads: ``workers`` hashing, at most ``queue`` waiting.

    argon2id costs ~64 MiB and tens of milliseconds of CPU per call; on the default
    pool a burst of logins would hold every thread that the database calls need.
    """

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.limit = workers + queue
        self._pool: ThreadPoolExecutor | None = None  # made on first use, again after close
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def taken(self) -> int:
        """Calls running or queued now."""
        return self._taken

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a hashing thread; :class:`HashBusy` when the pool is full."""
        with self._lock:
            if self._taken >= self.limit:
                raise HashBusy("password_hashing", "busy")
            self._taken += 1
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="argon2")
            fut = self._pool.submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        # released when the thread is done, not when a cancelled caller stops waiting
        fut.add_done_callback(self._release)
        return await asyncio.wrap_future(fut)

    def _release(self, _: Future[Any] | None) -> None:
        with self._lock:
            self._taken -= 1

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _Db:
    """The few statements we need, on sqlite3 or psycopg (qmark → format placeholders)."""

    def __init__(self, kind: str, target: str, schema: str | None = None) -> None:
        self.kind = kind
        self.schema = schema
        self._lock = threading.Lock()
        if kind == "postgres":
            import psycopg

            try:
                self._pg = psycopg.connect(target, autocommit=True, connect_timeout=5)
                if schema is not None:  # beside every table of the deployment
                    self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                    self._pg.execute(f'SET search_path TO "{schema}"')
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

    def columns(self, table: str) -> set[str]:
        if self.kind == "postgres":
            rows = self.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = ? AND table_schema = current_schema()",
                (table,),
            )
            return {str(r[0]) for r in rows}
        return {str(r[1]) for r in self.execute(f"PRAGMA table_info({table})")}

    def public_leftovers(self) -> int:
        """Users in PostgreSQL's ``public.web_users`` while this schema has none: versions
        before 2026-12 kept the accounts there, not in ``[store] postgres_schema``."""
        if self.kind != "postgres" or self.schema in (None, "public"):
            return 0
        if self.execute("SELECT 1 FROM web_users LIMIT 1"):
            return 0
        if not self.execute("SELECT to_regclass('public.web_users')")[0][0]:
            return 0
        return int(self.execute("SELECT count(*) FROM public.web_users")[0][0])


class Accounts:
    """Users (argon2 passwords), expiring tokens, static config tokens, the audit log."""

    def __init__(self, config: SiteConfig, clock_ms: Callable[[], int]) -> None:
        self.config = config
        self.clock_ms = clock_ms
        auth = config.web.auth
        self.hashing = HashPool(auth.hash_workers, auth.hash_queue)
        self._idle_ms = auth.idle_timeout_s * 1000
        # a used session's expiry is written at most once per this (a write per call
        # would turn every read into a database write)
        self._touch_ms = min(30_000, self._idle_ms // 10)
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
            db = _Db(kind, target, st.postgres_schema)
            for stmt in _SCHEMA:
                db.execute(stmt)
            have = db.columns("web_tokens")
            for col, decl in _TOKEN_COLUMNS:
                if col not in have:
                    db.execute(f"ALTER TABLE web_tokens ADD COLUMN {col} {decl}")
            if "absolute_expires_at" not in have:  # tokens from before sessions
                db.execute("UPDATE web_tokens SET absolute_expires_at = expires_at")
            have = db.columns("web_users")
            for col, decl in _USER_COLUMNS:
                if col not in have:
                    db.execute(f"ALTER TABLE web_users ADD COLUMN {col} {decl}")
            left = db.public_leftovers()
            if left:
                log.warning(
                    "accounts: %d users are in public.web_users, where versions before 2026-12"
                    " kept them; they now live in schema %r with every other table. To keep"
                    " them, see README 'Upgrading' (one INSERT ... SELECT per table)",
                    left,
                    st.postgres_schema,
                )
            return db

        self._db = await self._run(setup)
        for u in web.users:
            if await self.user(u.username) is None:
                pw = u.password
                await self.create_user(
                    u.username,
                    pw,
                    u.org,
                    u.role,
                    pre_hashed=pw.startswith("$argon2"),
                    duties=u.duties,
                )

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)
        self.hashing.close()

    # -- users ------------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        password: str,
        org: str,
        role: str,
        *,
        pre_hashed: bool = False,
        duties: Sequence[str] = (),
    ) -> bool:
        """False if the user name is taken."""
        db = self._conn()
        now = self.clock_ms()
        if await self._run(
            lambda: db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,))
        ):
            return False
        pw = password if pre_hashed else await self.hashing.run(hash_password, password)

        def do() -> bool:
            if db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)):
                return False
            db.execute(
                "INSERT INTO web_users (username, org, role, pw_hash, created_at, disabled,"
                " duties) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (username, org, role, pw, now, False, _duties_text(duties)),
            )
            return True

        return await self._run(do)

    async def user(self, username: str) -> dict[str, Any] | None:
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT username, org, role, created_at, disabled, duties FROM web_users"
                " WHERE username = ?",
                (username,),
            )
        )
        return _user(rows[0]) if rows else None

    async def users(self, orgs: frozenset[str]) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT username, org, role, created_at, disabled, duties FROM web_users"
                " ORDER BY username"
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
        duties: Sequence[str] | None = None,
    ) -> bool:
        db = self._conn()
        now = self.clock_ms()
        pw_hash = None if password is None else await self.hashing.run(hash_password, password)

        def do() -> bool:
            if not db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)):
                return False
            if pw_hash is not None:
                db.execute(
                    "UPDATE web_users SET pw_hash = ? WHERE username = ?", (pw_hash, username)
                )
            text = None if duties is None else _duties_text(duties)
            for col, val in (
                ("role", role),
                ("org", org),
                ("disabled", disabled),
                ("duties", text),
            ):
                if val is not None:
                    db.execute(
                        f"UPDATE web_users SET {col} = ? WHERE username = ?", (val, username)
                    )
            if disabled or role is not None or org is not None or pw_hash is not None:
                # a changed or disabled account must log in again
                _revoke_user(db, username, now, "account_changed")
            return True

        return await self._run(do)

    async def delete_user(self, username: str) -> bool:
        db = self._conn()

        now = self.clock_ms()

        def do() -> bool:
            found = bool(db.execute("SELECT 1 FROM web_users WHERE username = ?", (username,)))
            _revoke_user(db, username, now, "account_deleted")
            db.execute("DELETE FROM web_users WHERE username = ?", (username,))
            return found

        return await self._run(do)

    async def check_password(self, username: str, password: str) -> Principal | None:
        """The user's principal if the password is right and the account enabled.

        The lookup runs on the default pool, argon2 on :attr:`hashing` (which raises
        :class:`HashBusy` when full)."""
        db = self._conn()
        rows = await self._run(
            lambda: db.execute(
                "SELECT org, role, pw_hash, disabled, duties FROM web_users WHERE username = ?",
                (username,),
            )
        )
        # unknown and disabled accounts cost the same hash: no timing tells them apart
        stored = rows[0][2] if rows and not rows[0][3] else _DUMMY_HASH
        ok = await self.hashing.run(verify_password, stored, password)
        if not ok or not rows or rows[0][3]:
            return None
        org, role, _, _, duties = rows[0]
        return Principal(
            name=username, org=org, role=role, username=username, duties=_duties_set(duties)
        )

    # -- tokens -----------------------------------------------------------------------------

    async def issue_token(
        self, principal: Principal, ttl_s: int, name: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """A machine token carrying ``principal``'s org and role, with a fixed lifetime;
        returns (token, its record)."""
        now = self.clock_ms()
        end = now + ttl_s * 1000
        return await self._insert_token(principal, name, "machine", now, end, end, False, None)

    async def open_session(
        self, principal: Principal, *, room: bool = False, duty_operator: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A login session: sliding expiry, capped by ``max_session_s`` (room sessions:
        ``room_max_session_s``)."""
        auth = self.config.web.auth
        now = self.clock_ms()
        cap = now + (auth.room_max_session_s if room else auth.max_session_s) * 1000
        exp = slid_expiry(now, self._idle_ms, cap)
        return await self._insert_token(
            principal, "", "session", now, exp, cap, room, duty_operator
        )

    async def _insert_token(
        self,
        principal: Principal,
        name: str,
        kind: str,
        now: int,
        expires_at: int,
        absolute: int,
        room: bool,
        duty_operator: str | None,
    ) -> tuple[str, dict[str, Any]]:
        token = new_token()
        rec: dict[str, Any] = {
            "id": hash_token(token)[:16],
            "name": name or principal.name,
            "username": principal.username,
            "org": principal.org,
            "role": principal.role,
            "created_at": now,
            "expires_at": expires_at,
            "absolute_expires_at": absolute,
        }
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO web_tokens (id, token_hash, username, name, org, role, created_at,"
                " expires_at, kind, absolute_expires_at, room, duty_operator)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec["id"],
                    hash_token(token),
                    rec["username"],
                    rec["name"],
                    rec["org"],
                    rec["role"],
                    now,
                    expires_at,
                    kind,
                    absolute,
                    room,
                    duty_operator,
                ),
            )
        )
        return token, rec

    async def authenticate(self, token: str) -> Principal | Refused:
        """Who holds ``token`` — a config token or a live issued one — or why not.

        Using a login session slides its expiry (written at most every few seconds).
        """
        h = hash_token(token)
        static = self._static.get(h)
        if static is not None:
            return static
        now = self.clock_ms()
        db = self._conn()
        idle, slack = self._idle_ms, self._touch_ms

        def do() -> Principal | Refused:
            rows = db.execute(
                "SELECT t.id, t.username, t.name, t.org, t.role, t.kind, t.expires_at,"
                " t.absolute_expires_at, t.room, t.duty_operator, t.revoked_at, u.duties"
                " FROM web_tokens t LEFT JOIN web_users u ON u.username = t.username"
                " WHERE t.token_hash = ?",
                (h,),
            )
            if not rows:
                return Refused("unauthorized")
            tid, username, name, org, role, kind, exp, cap, room, duty, revoked, duties = rows[0]
            if revoked is not None:
                return Refused("session_revoked")
            if exp <= now:
                return Refused("session_expired")
            session = None
            if kind == "session":
                new_exp = slid_expiry(now, idle, cap)
                if new_exp - exp >= slack:
                    db.execute(
                        "UPDATE web_tokens SET expires_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (new_exp, tid),
                    )
                    exp = new_exp
                session = Session(exp, cap, bool(room), duty)
            return Principal(
                name=username or name,
                org=org,
                role=role,
                username=username,
                token_id=tid,
                session=session,
                duties=_duties_set(duties) if username else frozenset(),
            )

        return await self._run(do)

    async def principal(self, token: str) -> Principal | None:
        """Who holds ``token``, or None (see :meth:`authenticate` for why)."""
        found = await self.authenticate(token)
        return found if isinstance(found, Principal) else None

    async def set_duty_operator(self, token_id: str, duty_operator: str) -> bool:
        """Name the duty operator of a room session; False if it is no live room session."""
        db = self._conn()

        def do() -> bool:
            if not db.execute(
                "SELECT 1 FROM web_tokens WHERE id = ? AND room AND revoked_at IS NULL",
                (token_id,),
            ):
                return False
            db.execute(
                "UPDATE web_tokens SET duty_operator = ? WHERE id = ?", (duty_operator, token_id)
            )
            return True

        return await self._run(do)

    async def tokens(self, orgs: frozenset[str]) -> list[dict[str, Any]]:
        """Live tokens and sessions (never their secret)."""
        now = self.clock_ms()
        rows = await self._run(
            lambda: self._conn().execute(
                "SELECT id, name, username, org, role, created_at, expires_at, kind,"
                " absolute_expires_at, room, duty_operator FROM web_tokens"
                " WHERE revoked_at IS NULL AND expires_at > ? ORDER BY created_at",
                (now,),
            )
        )
        keys = (
            "id",
            "name",
            "username",
            "org",
            "role",
            "created_at",
            "expires_at",
            "kind",
            "absolute_expires_at",
            "room",
            "duty_operator",
        )
        out = [dict(zip(keys, r, strict=True)) for r in rows if r[3] in orgs]
        for t in out:
            t["room"] = bool(t["room"])
        return out

    async def token_org(self, token_id: str) -> str | None:
        rows = await self._run(
            lambda: self._conn().execute("SELECT org FROM web_tokens WHERE id = ?", (token_id,))
        )
        return str(rows[0][0]) if rows else None

    async def revoke_token(self, token_id: str, why: str = "revoked") -> bool:
        """End a token or session now; its holders hear ``session_revoked``."""
        db = self._conn()
        now = self.clock_ms()

        def do() -> bool:
            found = bool(
                db.execute(
                    "SELECT 1 FROM web_tokens WHERE id = ? AND revoked_at IS NULL", (token_id,)
                )
            )
            db.execute(
                "UPDATE web_tokens SET revoked_at = ?, revoked_why = ?"
                " WHERE id = ? AND revoked_at IS NULL",
                (now, why, token_id),
            )
            return found

        return await self._run(do)

    async def purge_expired(self) -> None:
        """Forget tokens that ended more than a day ago."""
        before = self.clock_ms() - _REMEMBER_ENDED_MS
        await self._run(
            lambda: self._conn().execute(
                "DELETE FROM web_tokens WHERE expires_at <= ? OR revoked_at <= ?",
                (before, before),
            )
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


def _revoke_user(db: _Db, username: str, now: int, why: str) -> None:
    db.execute(
        "UPDATE web_tokens SET revoked_at = ?, revoked_why = ?"
        " WHERE username = ? AND revoked_at IS NULL",
        (now, why, username),
    )


def _duties_text(duties: Sequence[str]) -> str:
    return ",".join(d for d in DUTIES if d in set(duties))


def _duties_set(text: str | None) -> frozenset[str]:
    return frozenset(d for d in (text or "").split(",") if d in DUTIES)


def _user(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "username": r[0],
        "org": r[1],
        "role": r[2],
        "created_at": r[3],
        "disabled": bool(r[4]),
        "duties": sorted(_duties_set(r[5]), key=DUTIES.index),
    }
