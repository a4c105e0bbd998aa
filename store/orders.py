"""Dispatch orders (派车单) in the records' database: SQLite or PostgreSQL.

The same connection helper as :mod:`store.records` (``?`` SQL on both dialects,
PostgreSQL tables in the store's schema, calls in a worker thread under a lock).
One row per (organisation, order id) — ids are unique per organisation — with
the columns the queries filter on and the whole order as JSON::

    ord_orders  org, id, state, vehicle, driver, requester, start_ms, end_ms,
                created_at, version, doc

A change is a compare-and-set on ``version`` (:meth:`OrderStore.update`): two
approvers deciding the same step at once, or the GPS sweeper and a dispatcher's
manual record, never both win; the loser sees ``None`` and reads the order again.
The rules of what may change are in :mod:`store.orders_core`; this module only
stores.

Orders made before this table (``web_dispatch_orders`` in the web's database,
:mod:`web.records` up to this version) are copied in once by :meth:`OrderStore.migrate`
when the table is empty: an approved one as an already-approved request, the others
pending.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from fleet.threads import to_thread_holding
from store.config import StoreConfig

# ServiceUnavailable as store.records has it (fleet.errors now, fleet.errors with #13)
from store.records import ServiceUnavailable, _Conn

__all__ = ["OrderStore", "legacy_order"]

T = TypeVar("T")

_DDL = (
    """CREATE TABLE IF NOT EXISTS ord_orders (
        org TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, vehicle TEXT, driver TEXT,
        requester TEXT NOT NULL, start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL,
        created_at BIGINT NOT NULL, version BIGINT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (org, id))""",
    "CREATE INDEX IF NOT EXISTS ord_orders_window ON ord_orders (start_ms, end_ms)",
    "CREATE INDEX IF NOT EXISTS ord_orders_state ON ord_orders (state)",
    "CREATE INDEX IF NOT EXISTS ord_orders_id ON ord_orders (id)",
)
_COLS = "doc, version"


def _dump(o: dict[str, Any]) -> str:
    return json.dumps(o, ensure_ascii=False, sort_keys=True)


def _load(row: Sequence[Any]) -> dict[str, Any]:
    doc = json.loads(row[0])
    doc["version"] = int(row[1])
    return dict(doc)


def _row(o: dict[str, Any], version: int) -> tuple[Any, ...]:
    doc = {k: v for k, v in o.items() if k != "version"}
    return (
        o["org"],
        o["id"],
        o["state"],
        o.get("vehicle"),
        o.get("driver"),
        o.get("requester") or "",
        int(o["start"]),
        int(o["end"]),
        int(o.get("created_at") or 0),
        version,
        _dump(doc),
    )


_INSERT = (
    "INSERT INTO ord_orders (org, id, state, vehicle, driver, requester, start_ms, end_ms,"
    " created_at, version, doc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def legacy_order(r: dict[str, Any]) -> dict[str, Any]:
    """An order of the earlier table (:mod:`web.records` keys) as an order of this one."""
    approved = bool(r["approved"])
    approvals = []
    if approved:
        approvals.append(
            {
                "by": r.get("approved_by") or "",
                "at": int(r.get("approved_at") or r.get("created_at") or 0),
                "decision": "approve",
                "reason": "",
                "step": "office",
            }
        )
    return {
        "org": r["org"],
        "id": r["id"],
        "state": "approved" if approved else "pending",
        "source": "entry",
        "type": r["type"],
        "purpose": r.get("reason") or "",
        "reason": r.get("reason") or "",
        "passengers": 0,
        "passenger_names": "",
        "destination": None,
        "region": None,
        "start": int(r["start"]),
        "end": int(r["end"]),
        "vehicle_preferred": None,
        "vehicle": r["vehicle"],
        "driver": None,
        "driver_name": None,
        "requester": r.get("created_by") or "",
        "created_by": r.get("created_by") or "",
        "created_at": int(r.get("created_at") or 0),
        "chain": ["office"],
        "approvals": approvals,
        "approved": approved,
        "approved_by": r.get("approved_by"),
        "approved_at": r.get("approved_at"),
        "dispatched_by": None,
        "dispatched_at": None,
        "out_at": None,
        "back_at": None,
        "km": None,
        "trip_source": None,
        "late": False,
        "cancel_reason": None,
        "reject_reason": None,
    }


class OrderStore:
    """The orders of one site. Call :meth:`open` first and :meth:`close` at the end."""

    def __init__(self, config: StoreConfig, *, path: str | None = None) -> None:
        kind = "postgres" if config.kind == "postgres" else "sqlite"
        if kind == "sqlite" and path is None:
            path = ":memory:" if config.kind == "memory" else config.sqlite_path
        self._c = _Conn(kind, config, path)
        self._lock = asyncio.Lock()

    @property
    def kind(self) -> str:
        return self._c.kind

    async def _run(self, fn: Callable[[_Conn], T]) -> T:
        return await to_thread_holding(self._lock, self._call, fn)

    def _call(self, fn: Callable[[_Conn], T]) -> T:
        c = self._c
        if c.db is None:
            c.connect()
        try:
            return fn(c)
        except Exception as exc:
            if c.kind == "postgres":
                import psycopg

                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    c.close()
                    raise ServiceUnavailable("postgresql", str(exc)) from exc
            raise

    async def open(self) -> None:
        def setup(c: _Conn) -> None:
            for stmt in _DDL:
                c.execute(stmt)

        await self._run(setup)

    async def close(self) -> None:
        await to_thread_holding(self._lock, self._c.close)

    async def migrate(self, legacy: Iterable[dict[str, Any]]) -> int:
        """Copy the earlier table's orders in, once: only into an empty table."""
        rows = [legacy_order(r) for r in legacy]

        def do(c: _Conn) -> int:
            if not rows or c.execute("SELECT count(*) FROM ord_orders")[0][0]:
                return 0
            c.begin()
            try:
                for o in rows:
                    c.execute(_INSERT, _row(o, 1))
            except BaseException:
                c.rollback()
                raise
            c.commit()
            return len(rows)

        return await self._run(do)

    # -- reading ----------------------------------------------------------------------------

    async def get(self, org: str, order_id: str) -> dict[str, Any] | None:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_COLS} FROM ord_orders WHERE org = ? AND id = ?", (org, order_id)
            )
        )
        return _load(rows[0]) if rows else None

    async def by_id(self, order_id: str) -> list[dict[str, Any]]:
        """Every organisation's order with this id (the caller filters what it may see)."""
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {_COLS} FROM ord_orders WHERE id = ? ORDER BY org", (order_id,)
            )
        )
        return [_load(r) for r in rows]

    async def select(
        self,
        *,
        orgs: Iterable[str] | None = None,
        states: Iterable[str] | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        requester: str | None = None,
        vehicle: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Orders by creation, filtered: organisations, states, window overlapping
        ``[from_ms, to_ms)``, requester, vehicle."""
        sql = f"SELECT {_COLS} FROM ord_orders WHERE 1 = 1"
        args: list[Any] = []
        for col, vals in (("org", orgs), ("state", states)):
            if vals is not None:
                vs = sorted(set(vals))
                if not vs:
                    return []
                sql += f" AND {col} IN ({', '.join('?' * len(vs))})"
                args.extend(vs)
        if from_ms is not None:
            sql += " AND end_ms >= ?"
            args.append(from_ms)
        if to_ms is not None:
            sql += " AND start_ms < ?"
            args.append(to_ms)
        if requester is not None:
            sql += " AND requester = ?"
            args.append(requester)
        if vehicle is not None:
            sql += " AND vehicle = ?"
            args.append(vehicle)
        sql += " ORDER BY created_at, org, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        rows = await self._run(lambda c: c.execute(sql, args))
        return [_load(r) for r in rows]

    async def holding(
        self, from_ms: int, to_ms: int, states: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Orders in ``states`` whose window overlaps ``[from_ms, to_ms]`` and that name a
        vehicle or a driver (what makes a vehicle or driver busy)."""
        ss = sorted(set(states))
        sql = (
            f"SELECT {_COLS} FROM ord_orders WHERE start_ms <= ? AND end_ms >= ?"
            f" AND state IN ({', '.join('?' * len(ss))})"
            " AND (vehicle IS NOT NULL OR driver IS NOT NULL)"
        )
        rows = await self._run(lambda c: c.execute(sql, (to_ms, from_ms, *ss)))
        return [_load(r) for r in rows]

    # -- writing ----------------------------------------------------------------------------

    async def add(self, o: dict[str, Any]) -> bool:
        """Insert a new order (version 1); False if its organisation already has that id."""

        def do(c: _Conn) -> bool:
            if c.execute("SELECT 1 FROM ord_orders WHERE org = ? AND id = ?", (o["org"], o["id"])):
                return False
            c.execute(_INSERT, _row(o, 1))
            return True

        ok = await self._run(do)
        if ok:
            o["version"] = 1
        return ok

    async def put_many(self, orders: Sequence[dict[str, Any]]) -> None:
        """Insert or overwrite (a CSV import may correct earlier rows); the key is
        (organisation, id), so a row only ever replaces its own organisation's order."""
        sql = (
            _INSERT + " ON CONFLICT (org, id) DO UPDATE SET state = excluded.state,"
            " vehicle = excluded.vehicle, driver = excluded.driver,"
            " requester = excluded.requester, start_ms = excluded.start_ms,"
            " end_ms = excluded.end_ms, created_at = excluded.created_at,"
            " version = ord_orders.version + 1, doc = excluded.doc"
        )

        def do(c: _Conn) -> None:
            c.begin()
            try:
                for o in orders:
                    c.execute(sql, _row(o, 1))
            except BaseException:
                c.rollback()
                raise
            c.commit()

        await self._run(do)

    async def update(self, o: dict[str, Any]) -> dict[str, Any] | None:
        """Write ``o`` if the stored order is still at ``o["version"]``; the stored order
        (version + 1), or None when another change came first."""
        version = int(o["version"])
        new = _row(o, version + 1)

        def do(c: _Conn) -> bool:
            got = c.execute(
                "UPDATE ord_orders SET state = ?, vehicle = ?, driver = ?, requester = ?,"
                " start_ms = ?, end_ms = ?, created_at = ?, version = ?, doc = ?"
                " WHERE org = ? AND id = ? AND version = ? RETURNING id",
                (*new[2:], new[0], new[1], version),
            )
            return bool(got)

        if not await self._run(do):
            return None
        return {**o, "version": version + 1}
