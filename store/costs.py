"""运行费用 in the records database (SQLite or PostgreSQL): items, imports, bad rows, mappings.

The cost store rides on the :class:`~store.records.RecordStore`'s connection (same
database, same schema, same worker thread and lock): costs are records of the
office, read beside the vehicles they name. Tables::

    cost_items      fingerprint (PK), kind, vehicle, plate, org, ts, month, amount,
                    doc (the normalised fields, JSON), supplier, import_id
    cost_imports    id, kind, supplier, at, by_user, filename, imported, duplicates, bad
    cost_bad_rows   import_id, line, reason, row (JSON) — kept like ingest's dead letters
    cost_mappings   supplier, kind, columns (JSON {their header: our key})
    cost_stations   supplier, name, lat, lon (WGS-84) — the fuel supplier's station list
    cost_budgets    org, year, amount (yuan per year)
    cost_anomalies  id (the episode id), kind, vehicle, org, ts, month, fingerprint, detail

An item is stored once per fingerprint (``ON CONFLICT DO NOTHING``): the second
import of a file adds nothing and reports its rows as duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from store.records import RecordStore

__all__ = ["BadRowLike", "CostItemLike", "CostStore", "month_of"]


class CostItemLike(Protocol):
    """What the store reads of a good row (``costs.validate.CostItem`` has this shape;
    persistence does not import the costs stage)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def vehicle(self) -> str: ...
    @property
    def plate(self) -> str: ...
    @property
    def org(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def amount(self) -> float: ...
    @property
    def fields(self) -> dict[str, Any]: ...


class BadRowLike(Protocol):
    """What the store reads of a bad row (``costs.validate.BadRow``)."""

    @property
    def line(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def row(self) -> dict[str, Any]: ...


ItemT = TypeVar("ItemT", bound=CostItemLike)

_DDL = (
    """CREATE TABLE IF NOT EXISTS cost_items (
        fingerprint TEXT PRIMARY KEY, kind TEXT NOT NULL, vehicle TEXT NOT NULL,
        plate TEXT NOT NULL, org TEXT NOT NULL, ts BIGINT NOT NULL, month TEXT NOT NULL,
        amount DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL, supplier TEXT NOT NULL,
        import_id TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cost_items_month ON cost_items (month, org)",
    "CREATE INDEX IF NOT EXISTS cost_items_vehicle ON cost_items (vehicle, ts)",
    """CREATE TABLE IF NOT EXISTS cost_imports (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, supplier TEXT NOT NULL, at BIGINT NOT NULL,
        by_user TEXT NOT NULL, filename TEXT NOT NULL, imported INTEGER NOT NULL,
        duplicates INTEGER NOT NULL, bad INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cost_bad_rows (
        import_id TEXT NOT NULL, line INTEGER NOT NULL, reason TEXT NOT NULL,
        row TEXT NOT NULL, PRIMARY KEY (import_id, line))""",
    """CREATE TABLE IF NOT EXISTS cost_mappings (
        supplier TEXT NOT NULL, kind TEXT NOT NULL, columns TEXT NOT NULL,
        PRIMARY KEY (supplier, kind))""",
    """CREATE TABLE IF NOT EXISTS cost_stations (
        supplier TEXT NOT NULL, name TEXT NOT NULL, lat DOUBLE PRECISION NOT NULL,
        lon DOUBLE PRECISION NOT NULL, PRIMARY KEY (supplier, name))""",
    """CREATE TABLE IF NOT EXISTS cost_budgets (
        org TEXT NOT NULL, year INTEGER NOT NULL, amount DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (org, year))""",
    """CREATE TABLE IF NOT EXISTS cost_anomalies (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, vehicle TEXT NOT NULL, org TEXT NOT NULL,
        ts BIGINT NOT NULL, month TEXT NOT NULL, fingerprint TEXT, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS cost_anomalies_month ON cost_anomalies (month)",
)

_ITEM_COLS = "fingerprint, kind, vehicle, plate, org, ts, month, amount, doc, supplier, import_id"


def _text(s: str) -> str:
    """Text PostgreSQL can keep (no NUL); JSON columns escape it themselves."""
    return s.replace("\x00", "\ufffd")


def month_of(ts_ms: int, tz: str) -> str:
    """``YYYY-MM`` of a moment in the office's time zone."""
    return dt.datetime.fromtimestamp(ts_ms / 1000, ZoneInfo(tz)).strftime("%Y-%m")


def _item(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "fingerprint": r[0],
        "kind": r[1],
        "vehicle": r[2],
        "plate": r[3],
        "org": r[4],
        "ts": int(r[5]),
        "month": r[6],
        "amount": float(r[7]),
        "fields": json.loads(r[8]),
        "supplier": r[9],
        "import_id": r[10],
    }


class CostStore:
    """Costs of one site. :meth:`open` creates the tables (after the record store opened)."""

    def __init__(self, records: RecordStore, tz: str) -> None:
        self.records = records
        self.tz = tz

    async def _run(self, fn: Any, *, tx: bool = False) -> Any:
        # The record store's worker thread, lock and connection (see the module docstring).
        return await self.records._run(fn, tx=tx)

    async def open(self) -> None:
        def setup(c: Any) -> None:
            for stmt in _DDL:
                c.execute(stmt)

        await self._run(setup)

    # -- imports ------------------------------------------------------------------------------

    async def add_import(
        self,
        import_id: str,
        *,
        kind: str,
        supplier: str,
        items: Sequence[ItemT],
        bad: Sequence[BadRowLike],
        by: str,
        at: int,
        filename: str = "",
    ) -> tuple[list[ItemT], int]:
        """Store one import in one transaction: returns (the items that were new, duplicates)."""

        def put(c: Any) -> tuple[list[ItemT], int]:
            new: list[ItemT] = []
            for it in items:
                got = c.execute(
                    f"INSERT INTO cost_items ({_ITEM_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (fingerprint) DO NOTHING RETURNING fingerprint",
                    (
                        it.fingerprint,
                        it.kind,
                        it.vehicle,
                        it.plate,
                        it.org,
                        it.ts,
                        month_of(it.ts, self.tz),
                        it.amount,
                        json.dumps(it.fields, ensure_ascii=False, sort_keys=True),
                        supplier,
                        import_id,
                    ),
                )
                if got:
                    new.append(it)
            for b in bad:
                c.execute(
                    "INSERT INTO cost_bad_rows (import_id, line, reason, row) VALUES (?,?,?,?)",
                    (import_id, b.line, _text(b.reason), json.dumps(b.row, ensure_ascii=False)),
                )
            dup = len(items) - len(new)
            c.execute(
                "INSERT INTO cost_imports (id, kind, supplier, at, by_user, filename, imported,"
                " duplicates, bad) VALUES (?,?,?,?,?,?,?,?,?)",
                (import_id, kind, supplier, at, by, _text(filename), len(new), dup, len(bad)),
            )
            return new, dup

        out: tuple[list[ItemT], int] = await self._run(put, tx=True)
        return out

    async def imports(self, limit: int = 50) -> list[dict[str, Any]]:
        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT id, kind, supplier, at, by_user, filename, imported, duplicates, bad"
                " FROM cost_imports ORDER BY at DESC, id DESC LIMIT ?",
                (limit,),
            )

        keys = ("id", "kind", "supplier", "at", "by", "filename", "imported", "duplicates", "bad")
        return [dict(zip(keys, r, strict=True)) for r in await self._run(read)]

    async def bad_rows(self, import_id: str) -> list[dict[str, Any]]:
        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT line, reason, row FROM cost_bad_rows WHERE import_id = ? ORDER BY line",
                (import_id,),
            )

        return [
            {"line": int(r[0]), "reason": r[1], "row": json.loads(r[2])}
            for r in await self._run(read)
        ]

    # -- items ----------------------------------------------------------------------------------

    async def items(
        self,
        *,
        months: Sequence[str] | None = None,
        vehicle: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if months is not None:
            if not months:
                return []
            where.append(f"month IN ({','.join('?' * len(months))})")
            params += list(months)
        for cond, val in (
            ("vehicle = ?", vehicle),
            ("ts >= ?", from_ms),
            ("ts < ?", to_ms),
            ("kind = ?", kind),
        ):
            if val is not None:
                where.append(cond)
                params.append(val)
        sql = f"SELECT {_ITEM_COLS} FROM cost_items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, fingerprint"

        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute(sql, params)

        return [_item(r) for r in await self._run(read)]

    # -- mappings, stations, budgets -----------------------------------------------------------

    async def mapping(self, supplier: str, kind: str) -> dict[str, str] | None:
        """The supplier's columns for ``kind``: ``{their header: our field key}``."""

        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT columns FROM cost_mappings WHERE supplier = ? AND kind = ?",
                (supplier, kind),
            )

        rows = await self._run(read)
        return dict(json.loads(rows[0][0])) if rows else None

    async def mappings(self) -> list[dict[str, Any]]:
        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute(
                "SELECT supplier, kind, columns FROM cost_mappings ORDER BY supplier, kind"
            )

        return [
            {"supplier": r[0], "kind": r[1], "columns": json.loads(r[2])}
            for r in await self._run(read)
        ]

    async def put_mapping(self, supplier: str, kind: str, columns: Mapping[str, str]) -> None:
        def put(c: Any) -> None:
            c.execute(
                "INSERT INTO cost_mappings (supplier, kind, columns) VALUES (?,?,?)"
                " ON CONFLICT (supplier, kind) DO UPDATE SET columns = excluded.columns",
                (supplier, kind, json.dumps(dict(columns), ensure_ascii=False)),
            )

        await self._run(put, tx=True)

    async def stations(self, supplier: str | None = None) -> dict[str, tuple[float, float]]:
        """Station name → (lat, lon); ``supplier`` None: every supplier's (later names win)."""

        def read(c: Any) -> list[tuple[Any, ...]]:
            if supplier is None:
                return c.execute("SELECT name, lat, lon FROM cost_stations ORDER BY supplier")
            return c.execute(
                "SELECT name, lat, lon FROM cost_stations WHERE supplier = ?", (supplier,)
            )

        return {r[0]: (float(r[1]), float(r[2])) for r in await self._run(read)}

    async def put_stations(
        self, supplier: str, stations: Iterable[tuple[str, float, float]]
    ) -> int:
        rows = list(stations)

        def put(c: Any) -> int:
            for name, lat, lon in rows:
                c.execute(
                    "INSERT INTO cost_stations (supplier, name, lat, lon) VALUES (?,?,?,?)"
                    " ON CONFLICT (supplier, name) DO UPDATE SET lat = excluded.lat,"
                    " lon = excluded.lon",
                    (supplier, name, lat, lon),
                )
            return len(rows)

        n: int = await self._run(put, tx=True)
        return n

    async def budgets(self, year: int) -> dict[str, float]:
        def read(c: Any) -> list[tuple[Any, ...]]:
            return c.execute("SELECT org, amount FROM cost_budgets WHERE year = ?", (year,))

        return {r[0]: float(r[1]) for r in await self._run(read)}

    async def put_budget(self, org: str, year: int, amount: float) -> None:
        def put(c: Any) -> None:
            c.execute(
                "INSERT INTO cost_budgets (org, year, amount) VALUES (?,?,?)"
                " ON CONFLICT (org, year) DO UPDATE SET amount = excluded.amount",
                (org, year, amount),
            )

        await self._run(put, tx=True)

    # -- anomalies -----------------------------------------------------------------------------

    async def put_anomalies(self, rows: Sequence[dict[str, Any]]) -> int:
        """Add anomalies (an id already stored is kept as it was); returns how many were new."""

        def put(c: Any) -> int:
            new = 0
            for a in rows:
                got = c.execute(
                    "INSERT INTO cost_anomalies (id, kind, vehicle, org, ts, month, fingerprint,"
                    " detail) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (
                        a["id"],
                        a["kind"],
                        a["vehicle"],
                        a["org"],
                        a["ts"],
                        month_of(a["ts"], self.tz),
                        a.get("fingerprint"),
                        json.dumps(a["detail"], ensure_ascii=False, sort_keys=True),
                    ),
                )
                new += len(got)
            return new

        n: int = await self._run(put, tx=True)
        return n

    async def anomalies(self, months: Sequence[str] | None = None) -> list[dict[str, Any]]:
        def read(c: Any) -> list[tuple[Any, ...]]:
            if months is None:
                return c.execute(
                    "SELECT id, kind, vehicle, org, ts, month, fingerprint, detail"
                    " FROM cost_anomalies ORDER BY ts, id"
                )
            if not months:
                return []
            return c.execute(
                "SELECT id, kind, vehicle, org, ts, month, fingerprint, detail FROM cost_anomalies"
                f" WHERE month IN ({','.join('?' * len(months))}) ORDER BY ts, id",
                list(months),
            )

        keys = ("id", "kind", "vehicle", "org", "ts", "month", "fingerprint", "detail")
        out = []
        for r in await self._run(read):
            d = dict(zip(keys, r, strict=True))
            d["ts"] = int(d["ts"])
            d["detail"] = json.loads(d["detail"])
            out.append(d)
        return out
