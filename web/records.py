"""Fence changes made through the API, kept in the web's own database; the earlier orders.

Same database as :mod:`web.accounts` (tables prefixed ``web_``), so that a
restart — or another web node on the same PostgreSQL — finds them again::

    web_fence_changes  one row per fence id changed through the API: the fence as a
                       GeoJSON Feature (created or replaced), or a tombstone (deleted)

The configuration's fences stay the base; :func:`apply_fence_changes` lays the
stored changes over them at start-up. Every call runs in a worker thread.

Dispatch orders used to live here too (``web_dispatch_orders``, and before it
``web_orders`` with ids unique city-wide); they are in :mod:`store.orders` now.
:meth:`Records.legacy_orders` reads what an earlier version left, for
:meth:`store.orders.OrderStore.migrate` to copy once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web.accounts import Accounts

__all__ = ["FenceChange", "Records", "apply_fence_changes"]

SCHEMA = (
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

        await self.accounts.run(setup)

    async def legacy_orders(self) -> list[dict[str, Any]]:
        """The orders an earlier version kept here (``web_dispatch_orders``, or the older
        ``web_orders`` with organisation ``""``); empty when there are none."""
        db = self.accounts.database()
        cols = ", ".join(_ORDER_COLS)

        def read() -> list[Any]:
            if _table_exists(db, "web_dispatch_orders"):
                rows = db.execute(f"SELECT {cols} FROM web_dispatch_orders ORDER BY created_at")
                if rows:
                    return rows
            if _table_exists(db, "web_orders"):
                return [
                    ("", *r)
                    for r in db.execute(
                        f"SELECT {', '.join(_ORDER_COLS[1:])} FROM web_orders ORDER BY created_at"
                    )
                ]
            return []

        return [_order_dict(r) for r in await self.accounts.run(read)]

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
