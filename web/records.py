"""Dispatch orders and fence changes made through the API, kept in the web's own database.

Same database as :mod:`web.accounts` (tables prefixed ``web_``), so that a
restart — or another web node on the same PostgreSQL — finds them again::

    web_dispatch_orders  one row per (organisation, order id): all its fields, who created
                       it, approval state. Order ids are unique per organisation — the
                       organisation of the order's vehicle — so one county's import can never
                       overwrite another county's order, and a taken id is only ever one the
                       caller can see. Rows of the earlier ``web_orders`` (ids unique
                       city-wide) are copied over once, with organisation ``""``.
    web_fence_changes  one row per fence id changed through the API: the fence as a
                       GeoJSON Feature (created or replaced), or a tombstone (deleted)

The configuration's fences stay the base; :func:`apply_fence_changes` lays the
stored changes over them at start-up. Every call runs in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web.accounts import Accounts

__all__ = ["FenceChange", "Records", "apply_fence_changes"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS web_dispatch_orders (
        org TEXT NOT NULL, id TEXT NOT NULL, vehicle TEXT NOT NULL, type TEXT NOT NULL,
        start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, reason TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at BIGINT NOT NULL,
        approved BOOLEAN NOT NULL, approved_by TEXT, approved_at BIGINT,
        PRIMARY KEY (org, id))""",
    """CREATE TABLE IF NOT EXISTS web_fence_changes (
        fence_id TEXT PRIMARY KEY, deleted BOOLEAN NOT NULL, feature TEXT,
        changed_by TEXT NOT NULL, changed_at BIGINT NOT NULL, seq BIGINT NOT NULL)""",
)

_ORDER_COLS = (
    "org",
    "id",
    "vehicle",
    "type",
    "start_ms",
    "end_ms",
    "reason",
    "created_by",
    "created_at",
    "approved",
    "approved_by",
    "approved_at",
)


@dataclass(frozen=True, slots=True)
class FenceChange:
    """The latest API change of one fence: its Feature, or ``feature is None`` (deleted)."""

    fence_id: str
    feature: dict[str, Any] | None
    changed_by: str
    changed_at: int

    @property
    def deleted(self) -> bool:
        return self.feature is None


def _order_row(o: dict[str, Any]) -> tuple[Any, ...]:
    return (
        o["org"],
        o["id"],
        o["vehicle"],
        o["type"],
        int(o["start"]),
        int(o["end"]),
        o.get("reason") or "",
        o.get("created_by") or "",
        int(o.get("created_at") or 0),
        bool(o["approved"]),
        o.get("approved_by"),
        o.get("approved_at"),
    )


def _order_dict(r: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(_ORDER_COLS, r, strict=True))
    return {
        "org": d["org"],
        "id": d["id"],
        "vehicle": d["vehicle"],
        "type": d["type"],
        "start": int(d["start_ms"]),
        "end": int(d["end_ms"]),
        "reason": d["reason"],
        "created_by": d["created_by"],
        "created_at": int(d["created_at"]),
        "approved": bool(d["approved"]),
        "approved_by": d["approved_by"],
        "approved_at": int(d["approved_at"]) if d["approved_at"] is not None else None,
    }


class Records:
    """Orders and fence changes. Call :meth:`open` after ``accounts.open()``."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def open(self) -> None:
        db = self.accounts.database()

        def setup() -> None:
            for stmt in SCHEMA:
                db.execute(stmt)
            legacy = db.execute("SELECT count(*) FROM web_dispatch_orders") == [
                (0,)
            ] and _table_exists(db, "web_orders")
            if legacy:
                cols = ", ".join(_ORDER_COLS[1:])
                db.execute(
                    f"INSERT INTO web_dispatch_orders (org, {cols}) SELECT '', {cols}"
                    " FROM web_orders"
                )

        await self.accounts.run(setup)

    # -- orders -----------------------------------------------------------------------------

    async def orders(self) -> list[dict[str, Any]]:
        db = self.accounts.database()
        rows = await self.accounts.run(
            lambda: db.execute(
                f"SELECT {', '.join(_ORDER_COLS)} FROM web_dispatch_orders"
                " ORDER BY created_at, org, id"
            )
        )
        return [_order_dict(r) for r in rows]

    async def orders_by_id(self, order_id: str) -> list[dict[str, Any]]:
        """Every organisation's order with this id (the caller filters what it may see)."""
        db = self.accounts.database()
        rows = await self.accounts.run(
            lambda: db.execute(
                f"SELECT {', '.join(_ORDER_COLS)} FROM web_dispatch_orders WHERE id = ?"
                " ORDER BY org",
                (order_id,),
            )
        )
        return [_order_dict(r) for r in rows]

    async def order(self, org: str, order_id: str) -> dict[str, Any] | None:
        db = self.accounts.database()
        rows = await self.accounts.run(
            lambda: db.execute(
                f"SELECT {', '.join(_ORDER_COLS)} FROM web_dispatch_orders"
                " WHERE org = ? AND id = ?",
                (org, order_id),
            )
        )
        return _order_dict(rows[0]) if rows else None

    async def add_order(self, o: dict[str, Any]) -> bool:
        """Insert a new order; False if its organisation already has that id."""
        db = self.accounts.database()

        def do() -> bool:
            if db.execute(
                "SELECT 1 FROM web_dispatch_orders WHERE org = ? AND id = ?", (o["org"], o["id"])
            ):
                return False
            db.execute(
                f"INSERT INTO web_dispatch_orders ({', '.join(_ORDER_COLS)})"
                f" VALUES ({', '.join('?' * len(_ORDER_COLS))})",
                _order_row(o),
            )
            return True

        return await self.accounts.run(do)

    async def put_orders(self, orders: Sequence[dict[str, Any]]) -> None:
        """Insert or overwrite orders (a CSV import may correct earlier rows). The key is
        (organisation, id): a row only ever replaces its own organisation's order."""
        db = self.accounts.database()
        sets = ", ".join(f"{c} = excluded.{c}" for c in _ORDER_COLS[2:])
        sql = (
            f"INSERT INTO web_dispatch_orders ({', '.join(_ORDER_COLS)})"
            f" VALUES ({', '.join('?' * len(_ORDER_COLS))})"
            f" ON CONFLICT (org, id) DO UPDATE SET {sets}"
        )

        def do() -> None:
            for o in orders:
                db.execute(sql, _order_row(o))

        await self.accounts.run(do)

    async def approve_order(
        self, org: str, order_id: str, by: str, at: int
    ) -> dict[str, Any] | None:
        """Mark approved (once: a second approval keeps the first's who/when)."""
        db = self.accounts.database()
        await self.accounts.run(
            lambda: db.execute(
                "UPDATE web_dispatch_orders SET approved = ?, approved_by = ?, approved_at = ?"
                " WHERE org = ? AND id = ? AND NOT approved",
                (True, by, at, org, order_id),
            )
        )
        return await self.order(org, order_id)

    # -- fences -----------------------------------------------------------------------------

    async def put_fences(self, features: Sequence[dict[str, Any]], by: str, at: int) -> None:
        await self._fence_rows([(str(f["id"]), f) for f in features], by, at)

    async def delete_fence(self, fence_id: str, by: str, at: int) -> None:
        await self._fence_rows([(fence_id, None)], by, at)

    async def _fence_rows(
        self, rows: Sequence[tuple[str, dict[str, Any] | None]], by: str, at: int
    ) -> None:
        db = self.accounts.database()
        sql = (
            "INSERT INTO web_fence_changes"
            " (fence_id, deleted, feature, changed_by, changed_at, seq)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (fence_id) DO UPDATE SET"
            " deleted = excluded.deleted, feature = excluded.feature,"
            " changed_by = excluded.changed_by, changed_at = excluded.changed_at,"
            " seq = excluded.seq"
        )

        def do() -> None:
            top = db.execute("SELECT COALESCE(MAX(seq), 0) FROM web_fence_changes")
            seq = int(top[0][0]) if top else 0
            for fid, feat in rows:
                seq += 1
                text = json.dumps(feat, ensure_ascii=False) if feat is not None else None
                db.execute(sql, (fid, feat is None, text, by, at, seq))

        await self.accounts.run(do)

    async def fence_changes(self) -> list[FenceChange]:
        """Every fence changed through the API, in the order of the changes."""
        db = self.accounts.database()
        rows = await self.accounts.run(
            lambda: db.execute(
                "SELECT fence_id, deleted, feature, changed_by, changed_at"
                " FROM web_fence_changes ORDER BY seq"
            )
        )
        return [
            FenceChange(str(fid), None if deleted else json.loads(feat), str(by), int(at))
            for fid, deleted, feat, by, at in rows
        ]


def _table_exists(db: Any, name: str) -> bool:
    """Whether the accounts database (SQLite or PostgreSQL) has a table of that name."""
    if db.kind == "postgres":
        sql = (
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_name = ? AND table_schema = current_schema()"
        )
    else:
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return bool(db.execute(sql, (name,)))


def apply_fence_changes(
    base: Sequence[Any], changes: Sequence[tuple[str, Any | None]]
) -> list[Any]:
    """The configuration's fences with ``(fence id, fence or None for deleted)`` changes laid
    over them in order. A changed fence keeps its place in ``base``; a new one goes last."""
    by_id: dict[str, Any] = {f.id: f for f in base}
    for fid, fence in changes:
        if fence is None:
            by_id.pop(fid, None)
        else:
            by_id[fid] = fence
    return list(by_id.values())
