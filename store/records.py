"""The records (一车一档、一人一档, the quota) in the history database: SQLite or PostgreSQL.

One SQL description serves both (``?`` placeholders, rewritten to ``%s`` for
psycopg; PostgreSQL tables live in the store's schema). Each record is a row
with the columns the queries need (plate, terminal, org, status) and the whole
record as JSON; every change writes a history row in the same transaction::

    rec_vehicles   id, plate, terminal, org, vehicle_class, status, doc, updated_at
    rec_drivers    id, org, status, doc, updated_at
    rec_history    seq, kind (vehicle|driver|quota|request), record_id, at, by, action,
                   before, after, changes (JSON)
    rec_quota      org, vehicle_class, authorised
    rec_requests   注册登记审批: id, doc, requested_by/at, state, decided_by/at, note

Calls run in a worker thread under a lock (stdlib sqlite3 / psycopg's blocking
connection), so the event loop never waits on the database. A lost PostgreSQL
connection raises :class:`~fleet.errors.ServiceUnavailable`; the next call
reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from fleet.errors import ServiceUnavailable
from fleet.model import VehicleConfig
from fleet.registry import Registry
from fleet.threads import to_thread_holding
from store.config import StoreConfig
from store.records_core import VEHICLE_LABELS, DriverRecord, VehicleRecord, changes, first_error

__all__ = [
    "SEED_CLASS",
    "RecordConflict",
    "RecordStore",
    "create_records",
    "load_fleet",
    "record_from_config",
    "vehicle_config",
]

log = logging.getLogger(__name__)

#: The class the configuration's establishment (no classes) is seeded as.
SEED_CLASS = "一般公务"

T = TypeVar("T")

_DDL = (
    """CREATE TABLE IF NOT EXISTS rec_vehicles (
        id TEXT PRIMARY KEY, plate TEXT NOT NULL UNIQUE, terminal TEXT NOT NULL,
        org TEXT NOT NULL, vehicle_class TEXT NOT NULL, status TEXT NOT NULL,
        doc TEXT NOT NULL, updated_at BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rec_vehicles_terminal ON rec_vehicles (terminal)",
    """CREATE TABLE IF NOT EXISTS rec_drivers (
        id TEXT PRIMARY KEY, org TEXT NOT NULL, status TEXT NOT NULL,
        doc TEXT NOT NULL, updated_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rec_history (
        seq {serial}, kind TEXT NOT NULL, record_id TEXT NOT NULL, at BIGINT NOT NULL,
        by_user TEXT NOT NULL, action TEXT NOT NULL, before TEXT, after TEXT,
        changes TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rec_history_record ON rec_history (kind, record_id, seq)",
    """CREATE TABLE IF NOT EXISTS rec_quota (
        org TEXT NOT NULL, vehicle_class TEXT NOT NULL, authorised INTEGER NOT NULL,
        PRIMARY KEY (org, vehicle_class))""",
    """CREATE TABLE IF NOT EXISTS rec_requests (
        id TEXT PRIMARY KEY, doc TEXT NOT NULL, requested_by TEXT NOT NULL,
        requested_at BIGINT NOT NULL, state TEXT NOT NULL, decided_by TEXT,
        decided_at BIGINT, note TEXT)""",
)


class RecordConflict(ValueError):
    """A unique field already taken (车牌号、终端) — the message is in Chinese."""


def _dump(doc: dict[str, Any] | None) -> str | None:
    return None if doc is None else json.dumps(doc, ensure_ascii=False, sort_keys=True)


def _vdoc(v: VehicleRecord) -> dict[str, Any]:
    return v.model_dump(mode="json")


class _Conn:
    """A blocking DB-API connection of one dialect, with ``?`` SQL."""

    def __init__(self, kind: str, config: StoreConfig, path: str | None) -> None:
        self.kind = kind
        self.config = config
        self.path = path
        self.db: Any = None

    def connect(self) -> None:
        if self.kind == "sqlite":
            assert self.path is not None
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db: Any = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")
            self.db = db
            return
        import psycopg

        schema = self.config.postgres_schema
        try:
            db = psycopg.connect(
                self.config.postgres_dsn,
                autocommit=True,
                connect_timeout=self.config.connect_timeout_s,
            )
            db.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            db.execute(f'SET search_path TO "{schema}"')
        except psycopg.OperationalError as exc:
            raise ServiceUnavailable("postgresql", str(exc)) from exc
        self.db = db

    def sql(self, text: str) -> str:
        return text if self.kind == "sqlite" else text.replace("?", "%s")

    def execute(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.db.execute(self.sql(text), tuple(params))
        try:
            return list(cur.fetchall()) if cur.description is not None else []
        finally:
            cur.close()

    def begin(self) -> None:
        # SQLite: take the write lock up front. A deferred transaction that reads and then
        # writes fails at once (SQLITE_BUSY, no busy wait) when the history wrote meanwhile.
        self.db.execute("BEGIN IMMEDIATE" if self.kind == "sqlite" else "BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class RecordStore:
    """The records of one site. Call :meth:`open` first and :meth:`close` at the end."""

    def __init__(self, config: StoreConfig, *, path: str | None = None) -> None:
        kind = "postgres" if config.kind == "postgres" else "sqlite"
        if kind == "sqlite" and path is None:
            path = ":memory:" if config.kind == "memory" else config.sqlite_path
        self._c = _Conn(kind, config, path)
        self._lock = asyncio.Lock()

    @property
    def kind(self) -> str:
        return self._c.kind

    async def _run(self, fn: Callable[[_Conn], T], *, tx: bool = False) -> T:
        return await to_thread_holding(self._lock, self._call, fn, tx)

    def _call(self, fn: Callable[[_Conn], T], tx: bool) -> T:
        c = self._c
        if c.db is None:
            c.connect()
        try:
            if not tx:
                return fn(c)
            c.begin()
            try:
                out = fn(c)
            except BaseException:
                c.rollback()
                raise
            c.commit()
            return out
        except Exception as exc:
            if c.kind == "postgres":
                import psycopg

                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    c.close()
                    raise ServiceUnavailable("postgresql", str(exc)) from exc
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    raise RecordConflict(_conflict_text(str(exc))) from exc
            elif isinstance(exc, sqlite3.IntegrityError):
                raise RecordConflict(_conflict_text(str(exc))) from exc
            raise

    async def open(self) -> None:
        serial = (
            "INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.kind == "sqlite"
            else "BIGSERIAL PRIMARY KEY"
        )

        def setup(c: _Conn) -> None:
            for stmt in _DDL:
                c.execute(stmt.format(serial=serial))

        await self._run(setup)

    async def close(self) -> None:
        await to_thread_holding(self._lock, self._c.close)

    # -- vehicles ---------------------------------------------------------------------------

    async def vehicles(self) -> list[VehicleRecord]:
        rows = await self._run(lambda c: c.execute("SELECT doc FROM rec_vehicles ORDER BY id"))
        return [VehicleRecord.model_validate_json(r[0]) for r in rows]

    async def registry_vehicles(self) -> list[VehicleConfig]:
        """What the registry needs of every record, without validating each again (they
        were validated when written): start-up at 100,000 vehicles stays a few seconds."""
        rows = await self._run(lambda c: c.execute("SELECT doc FROM rec_vehicles ORDER BY id"))
        out = []
        for (doc,) in rows:
            d = orjson.loads(doc)
            out.append(
                VehicleConfig.model_construct(
                    id=d["id"],
                    plate=d["plate"],
                    terminal=d["terminal"],
                    org=d["org"],
                    type=d.get("type", "car"),
                    speed_limit_kmh=d.get("speed_limit_kmh"),
                    status=d.get("status", "在用"),
                    vehicle_class=d.get("vehicle_class", "一般公务"),
                    vin=d.get("vin"),
                    terminal_maker=d.get("terminal_maker"),
                )
            )
        return out

    async def vehicles_version(self) -> int:
        """Grows with every change of any vehicle record (a cheap "anything new?")."""
        rows = await self._run(
            lambda c: c.execute("SELECT max(seq) FROM rec_history WHERE kind = 'vehicle'")
        )
        return int(rows[0][0] or 0) if rows else 0

    async def vehicle(self, vehicle_id: str) -> VehicleRecord | None:
        found = await self.vehicles_by_id([vehicle_id])
        return found[0] if found else None

    async def vehicles_by_id(self, ids: Sequence[str]) -> list[VehicleRecord]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._run(
            lambda c: c.execute(f"SELECT doc FROM rec_vehicles WHERE id IN ({marks})", ids)
        )
        return [VehicleRecord.model_validate_json(r[0]) for r in rows]

    async def put_vehicle(
        self, record: VehicleRecord, *, by: str, at: int, action: str = "update"
    ) -> dict[str, list[Any]]:
        """Create or replace; returns the changes written to the history (empty: none)."""

        def put(c: _Conn) -> dict[str, list[Any]]:
            return _put_vehicle(c, record, by, at, action)

        return await self._run(put, tx=True)

    async def seed_vehicles(self, records: Iterable[VehicleRecord], *, by: str, at: int) -> int:
        """The first import (the configuration's vehicles): only ids not yet on file, so
        re-running it changes nothing — after it the database is the source of truth."""
        recs = list(records)

        def seed(c: _Conn) -> int:
            have = {r[0] for r in c.execute("SELECT id FROM rec_vehicles")}
            n = 0
            for r in recs:
                if r.id not in have:
                    _put_vehicle(c, r, by, at, "import")
                    have.add(r.id)
                    n += 1
            return n

        return await self._run(seed, tx=True)

    # -- drivers ----------------------------------------------------------------------------

    async def drivers(self) -> list[DriverRecord]:
        rows = await self._run(lambda c: c.execute("SELECT doc FROM rec_drivers ORDER BY id"))
        return [DriverRecord.model_validate_json(r[0]) for r in rows]

    async def driver(self, driver_id: str) -> DriverRecord | None:
        rows = await self._run(
            lambda c: c.execute("SELECT doc FROM rec_drivers WHERE id = ?", (driver_id,))
        )
        return DriverRecord.model_validate_json(rows[0][0]) if rows else None

    async def put_driver(
        self, record: DriverRecord, *, by: str, at: int, action: str = "update"
    ) -> dict[str, list[Any]]:
        def put(c: _Conn) -> dict[str, list[Any]]:
            old = c.execute("SELECT doc FROM rec_drivers WHERE id = ?", (record.id,))
            before = json.loads(old[0][0]) if old else None
            after = record.model_dump(mode="json")
            diff = changes(before, after)
            if before is not None and not diff:
                return {}
            args = (record.org, record.status, _dump(after), at, record.id)
            if before is None:
                c.execute(
                    "INSERT INTO rec_drivers (org, status, doc, updated_at, id)"
                    " VALUES (?, ?, ?, ?, ?)",
                    args,
                )
            else:
                c.execute(
                    "UPDATE rec_drivers SET org = ?, status = ?, doc = ?, updated_at = ?"
                    " WHERE id = ?",
                    args,
                )
            _history(
                c,
                "driver",
                record.id,
                at,
                by,
                "create" if before is None else action,
                before,
                after,
                diff,
            )
            return diff

        return await self._run(put, tx=True)

    # -- history ----------------------------------------------------------------------------

    async def history(
        self, kind: str, record_id: str, *, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Changes of one record, newest first: who, when, action, before, after, changes."""
        rows = await self._run(
            lambda c: c.execute(
                "SELECT seq, at, by_user, action, before, after, changes FROM rec_history"
                " WHERE kind = ? AND record_id = ? ORDER BY seq DESC LIMIT ?",
                (kind, record_id, limit),
            )
        )
        return [
            {
                "seq": int(r[0]),
                "at": int(r[1]),
                "by": r[2],
                "action": r[3],
                "before": json.loads(r[4]) if r[4] else None,
                "after": json.loads(r[5]) if r[5] else None,
                "changes": json.loads(r[6]),
            }
            for r in rows
        ]

    # -- quota ------------------------------------------------------------------------------

    async def quota(self) -> dict[tuple[str, str], int]:
        rows = await self._run(
            lambda c: c.execute("SELECT org, vehicle_class, authorised FROM rec_quota")
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def set_quota(self, org: str, by_class: dict[str, int], *, by: str, at: int) -> None:
        """Replace the quota of ``org`` (class → 编制数); classes left out have none."""

        def put(c: _Conn) -> None:
            old = {
                r[0]: int(r[1])
                for r in c.execute(
                    "SELECT vehicle_class, authorised FROM rec_quota WHERE org = ?", (org,)
                )
            }
            c.execute("DELETE FROM rec_quota WHERE org = ?", (org,))
            for cls, n in sorted(by_class.items()):
                c.execute(
                    "INSERT INTO rec_quota (org, vehicle_class, authorised) VALUES (?, ?, ?)",
                    (org, cls, n),
                )
            _history(c, "quota", org, at, by, "update", old, dict(by_class), changes(old, by_class))

        await self._run(put, tx=True)

    async def seed_quota(self, establishment: Mapping[str, int], *, by: str, at: int) -> int:
        """The configuration's ``[web] establishment`` (编制数 per organisation) as the
        first quota: for an organisation whose quota was never set here, one row of the
        class ``一般公务`` (the establishment names no classes). Re-running it changes
        nothing — after it the quota here is the one source of the board's and the
        reports' 编制数. Returns how many organisations were seeded."""
        wanted = {o: int(n) for o, n in establishment.items()}

        def seed(c: _Conn) -> int:
            have = {r[0] for r in c.execute("SELECT DISTINCT org FROM rec_quota")}
            have |= {
                r[0]
                for r in c.execute(
                    "SELECT DISTINCT record_id FROM rec_history WHERE kind = ?", ("quota",)
                )
            }
            n = 0
            for org, count in sorted(wanted.items()):
                if org in have:
                    continue
                new = {SEED_CLASS: count}
                c.execute(
                    "INSERT INTO rec_quota (org, vehicle_class, authorised) VALUES (?, ?, ?)",
                    (org, SEED_CLASS, count),
                )
                _history(c, "quota", org, at, by, "import", {}, dict(new), changes({}, new))
                n += 1
            return n

        return await self._run(seed, tx=True)

    # -- registration requests (注册登记审批) ---------------------------------------------------

    async def add_request(
        self, request_id: str, record: VehicleRecord, *, by: str, at: int
    ) -> None:
        def put(c: _Conn) -> None:
            c.execute(
                "INSERT INTO rec_requests (id, doc, requested_by, requested_at, state)"
                " VALUES (?, ?, ?, ?, 'pending')",
                (request_id, _dump(_vdoc(record)), by, at),
            )
            _history(c, "request", request_id, at, by, "create", None, _vdoc(record), {})

        await self._run(put, tx=True)

    async def requests(self, state: str | None = None) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, doc, requested_by, requested_at, state, decided_by, decided_at, note"
                " FROM rec_requests ORDER BY requested_at, id"
            )
        )
        out = [
            {
                "id": r[0],
                "vehicle": json.loads(r[1]),
                "requested_by": r[2],
                "requested_at": int(r[3]),
                "state": r[4],
                "decided_by": r[5],
                "decided_at": r[6],
                "note": r[7],
            }
            for r in rows
        ]
        return [r for r in out if state is None or r["state"] == state]

    async def decide_request(
        self,
        request_id: str,
        *,
        approve: bool,
        by: str,
        at: int,
        note: str = "",
        register: VehicleRecord | None = None,
    ) -> bool:
        """Approve (and register ``register`` in the same transaction) or reject a pending
        request; False if it is not pending."""

        def put(c: _Conn) -> bool:
            rows = c.execute("SELECT state FROM rec_requests WHERE id = ?", (request_id,))
            if not rows or rows[0][0] != "pending":
                return False
            state = "approved" if approve else "rejected"
            c.execute(
                "UPDATE rec_requests SET state = ?, decided_by = ?, decided_at = ?, note = ?"
                " WHERE id = ?",
                (state, by, at, note, request_id),
            )
            _history(c, "request", request_id, at, by, state, None, None, {"note": [None, note]})
            if approve and register is not None:
                _put_vehicle(c, register, by, at, "create")
            return True

        return await self._run(put, tx=True)


def _put_vehicle(
    c: _Conn, record: VehicleRecord, by: str, at: int, action: str
) -> dict[str, list[Any]]:
    old = c.execute("SELECT doc FROM rec_vehicles WHERE id = ?", (record.id,))
    before = json.loads(old[0][0]) if old else None
    after = _vdoc(record)
    diff = changes(before, after)
    if before is not None and not diff:
        return {}
    if record.status != "已处置":
        # A terminal moves with the car; a disposed car's terminal may be fitted again.
        taken = c.execute(
            "SELECT id FROM rec_vehicles WHERE terminal = ? AND id <> ? AND status <> '已处置'",
            (record.terminal, record.id),
        )
        if taken:
            raise RecordConflict(f"终端 {record.terminal} 已装在车辆 {taken[0][0]} 上")
    args = (
        record.plate,
        record.terminal,
        record.org,
        record.vehicle_class,
        record.status,
        _dump(after),
        at,
        record.id,
    )
    if before is None:
        c.execute(
            "INSERT INTO rec_vehicles (plate, terminal, org, vehicle_class, status, doc,"
            " updated_at, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            args,
        )
    else:
        c.execute(
            "UPDATE rec_vehicles SET plate = ?, terminal = ?, org = ?, vehicle_class = ?,"
            " status = ?, doc = ?, updated_at = ? WHERE id = ?",
            args,
        )
    _history(
        c,
        "vehicle",
        record.id,
        at,
        by,
        "create" if before is None and action == "update" else action,
        before,
        after,
        diff,
    )
    return diff


def _history(
    c: _Conn,
    kind: str,
    record_id: str,
    at: int,
    by: str,
    action: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    diff: dict[str, Any],
) -> None:
    c.execute(
        "INSERT INTO rec_history (kind, record_id, at, by_user, action, before, after, changes)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kind, record_id, at, by, action, _dump(before), _dump(after), _dump(diff) or "{}"),
    )


def _conflict_text(raw: str) -> str:
    if "plate" in raw:
        return "车牌号已登记在另一辆车上"
    if "PRIMARY" in raw.upper() or "pkey" in raw or ".id" in raw:
        return "编号已存在"
    return "与已有档案冲突: " + raw[:200]


def create_records(config: StoreConfig) -> RecordStore:
    """The record store beside the history the configuration asks for."""
    return RecordStore(config)


def vehicle_config(r: VehicleRecord) -> VehicleConfig:
    """What the registry (and so the engine, the feed, the gateway) knows of a record."""
    return VehicleConfig(
        id=r.id,
        plate=r.plate,
        terminal=r.terminal,
        org=r.org,
        type=r.type,
        speed_limit_kmh=r.speed_limit_kmh,
        status=r.status,
        vehicle_class=r.vehicle_class,
        vin=r.vin,
        terminal_maker=r.terminal_maker,
    )


def record_from_config(v: VehicleConfig) -> VehicleRecord:
    """A configuration vehicle as the first version of its record (raises ValidationError)."""
    return VehicleRecord.model_validate(
        {
            "id": v.id,
            "plate": v.plate,
            "terminal": v.terminal,
            "org": v.org,
            "type": v.type,
            "speed_limit_kmh": v.speed_limit_kmh,
            "status": v.status,
            "vehicle_class": v.vehicle_class,
            "vin": v.vin,
            "terminal_maker": v.terminal_maker,
        }
    )


async def load_fleet(
    records: RecordStore,
    registry: Registry,
    seed: Sequence[VehicleConfig],
    now_ms: int,
    establishment: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Start-up: the configuration's vehicles become the first import (only ids not on
    file), then the registry takes every record on file — the database is the source
    of truth. A configuration vehicle that fails the record checks stays tracked as
    configured (logged, counted in ``not_on_file``); a record that no longer fits the
    registry (its organisation left the configuration) is skipped, logged.
    ``establishment`` (``[web] establishment``) seeds the quota of the organisations
    that never had one (:meth:`RecordStore.seed_quota`)."""
    good: list[VehicleRecord] = []
    bad = 0
    for v in seed:
        try:
            good.append(record_from_config(v))
        except ValidationError as exc:
            bad += 1
            log.warning(
                "vehicle %s from the configuration not put on file: %s",
                v.id,
                first_error(exc, VEHICLE_LABELS).message,
            )
    seeded = await records.seed_vehicles(good, by="config", at=now_ms)
    on_file = await records.registry_vehicles()
    orgs = set(registry.orgs.ids)
    fits = [v for v in on_file if v.org in orgs]
    for v in on_file:
        if v.org not in orgs:
            log.error(
                "vehicle %s on file names organisation %r, unknown here: not tracked", v.id, v.org
            )
    registry.upsert_many(fits)
    quota = 0
    if establishment:
        known = {o: n for o, n in establishment.items() if o in orgs}
        for o in sorted(set(establishment) - orgs):
            log.error("[web] establishment names organisation %r, unknown here: not seeded", o)
        quota = await records.seed_quota(known, by="config", at=now_ms)
    return {
        "seeded": seeded,
        "quota_seeded": quota,
        "on_file": len(on_file),
        "not_on_file": bad,
        "skipped": len(on_file) - len(fits),
    }
