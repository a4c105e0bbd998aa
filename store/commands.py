"""Commands to terminals, kept in table ``terminal_commands`` (SQLite or PostgreSQL).

One row per command: what was asked (kind, wire form), by whom, for which vehicle
and terminal, its state and when each state was reached (``history``, JSON), the
terminal's result code and reply. States only move along the transition table of
:mod:`ingest.jt808.commands` (:func:`~ingest.jt808.commands.transition_to`), so a
late or repeated result from the gateway never undoes a final state.

The table lives in the web's database (:class:`web.accounts.Accounts`): give
:class:`CommandStore` that connection (anything with ``execute(sql, args)`` and
qmark placeholders) and a runner that calls a function in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from ingest.jt808.commands import TRANSITIONS, transition_to

__all__ = ["SCHEMA", "CommandStore"]

T = TypeVar("T")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS terminal_commands (
        id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, org TEXT NOT NULL, phone TEXT NOT NULL,
        kind TEXT NOT NULL, wire TEXT NOT NULL, state TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL, published_at BIGINT, confirmed_by TEXT,
        alarm_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, result INTEGER,
        reply TEXT, reason TEXT, history TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS terminal_commands_vehicle"
    " ON terminal_commands (vehicle, created_at)",
    "CREATE INDEX IF NOT EXISTS terminal_commands_state ON terminal_commands (state, expires_at)",
)

_COLS = (
    "id",
    "vehicle",
    "org",
    "phone",
    "kind",
    "wire",
    "state",
    "created_by",
    "created_at",
    "expires_at",
    "updated_at",
    "published_at",
    "confirmed_by",
    "alarm_id",
    "attempts",
    "result",
    "reply",
    "reason",
    "history",
)
_SELECT = f"SELECT {', '.join(_COLS)} FROM terminal_commands"


class _Db(Protocol):
    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...


Runner = Callable[[Callable[[], T]], Awaitable[T]]


def _row(r: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(_COLS, r, strict=True))
    d["command"] = json.loads(d.pop("wire"))
    d["reply"] = json.loads(d["reply"]) if d["reply"] else None
    d["history"] = json.loads(d["history"])
    for k in ("created_at", "expires_at", "updated_at", "published_at", "attempts"):
        if d[k] is not None:
            d[k] = int(d[k])
    return d


class CommandStore:
    """Commands by id and by vehicle. Call :meth:`open` first (creates the table)."""

    def __init__(self, db: _Db, run: Runner[Any]) -> None:
        self.db = db
        self.run = run

    async def open(self) -> None:
        def setup() -> None:
            for stmt in SCHEMA:
                self.db.execute(stmt)

        await self.run(setup)

    async def add(self, cmd: dict[str, Any]) -> None:
        """A new command: ``id, vehicle, org, phone, kind, command (wire form), state,
        created_by, created_at, expires_at`` and optionally ``alarm_id``."""
        history = [{"state": cmd["state"], "at": cmd["created_at"], "by": cmd["created_by"]}]

        def do() -> None:
            self.db.execute(
                "INSERT INTO terminal_commands (id, vehicle, org, phone, kind, wire, state,"
                " created_by, created_at, expires_at, updated_at, alarm_id, history)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cmd["id"],
                    cmd["vehicle"],
                    cmd["org"],
                    cmd["phone"],
                    cmd["kind"],
                    json.dumps(cmd["command"], ensure_ascii=False),
                    cmd["state"],
                    cmd["created_by"],
                    cmd["created_at"],
                    cmd["expires_at"],
                    cmd["created_at"],
                    cmd.get("alarm_id"),
                    json.dumps(history, ensure_ascii=False),
                ),
            )

        await self.run(do)

    async def get(self, command_id: str) -> dict[str, Any] | None:
        rows = await self.run(lambda: self.db.execute(f"{_SELECT} WHERE id = ?", (command_id,)))
        return _row(rows[0]) if rows else None

    async def for_vehicle(self, vehicle: str, limit: int = 100) -> list[dict[str, Any]]:
        """The vehicle's commands, newest first."""
        rows = await self.run(
            lambda: self.db.execute(
                f"{_SELECT} WHERE vehicle = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (vehicle, limit),
            )
        )
        return [_row(r) for r in rows]

    async def open_count(self, vehicle: str) -> int:
        """Commands of ``vehicle`` not in a final state."""
        rows = await self.run(
            lambda: self.db.execute(
                "SELECT COUNT(*) FROM terminal_commands WHERE vehicle = ?"
                " AND state IN ('awaiting_confirmation', 'queued', 'sent')",
                (vehicle,),
            )
        )
        return int(rows[0][0])

    async def unpublished(self, republish_before: int | None = None) -> list[dict[str, Any]]:
        """Queued commands not handed to the broker yet — or, with ``republish_before``,
        handed to it before then and still queued — oldest first."""
        before = -1 if republish_before is None else republish_before
        rows = await self.run(
            lambda: self.db.execute(
                f"{_SELECT} WHERE state = 'queued' AND (published_at IS NULL OR published_at <= ?)"
                " ORDER BY created_at",
                (before,),
            )
        )
        return [_row(r) for r in rows]

    async def mark_published(self, command_id: str, at: int) -> None:
        await self.run(
            lambda: self.db.execute(
                "UPDATE terminal_commands SET published_at = ? WHERE id = ?", (at, command_id)
            )
        )

    async def apply(
        self,
        command_id: str,
        reported: str,
        at: int,
        *,
        by: str | None = None,
        attempts: int | None = None,
        result: int | None = None,
        reply: dict[str, Any] | None = None,
        reason: str | None = None,
        event: str | None = None,
    ) -> dict[str, Any] | None:
        """Move a command to ``reported`` if the transition table allows it (or by
        ``event``, e.g. ``confirm`` by the second operator ``by``); the command as it is
        afterwards, or None if it was left alone (unknown id, late report)."""

        def do() -> dict[str, Any] | None:
            rows = self.db.execute(f"{_SELECT} WHERE id = ?", (command_id,))
            if not rows:
                return None
            cur = _row(rows[0])
            if event is not None:
                nxt: str | None = TRANSITIONS.get((cur["state"], event))
            else:
                nxt = transition_to(cur["state"], reported)
            if nxt is None:
                return None
            step: dict[str, Any] = {"state": nxt, "at": at}
            if by:
                step["by"] = by
            if reason:
                step["reason"] = reason
            history = [*cur["history"], step]
            confirmed = cur["state"] == "awaiting_confirmation" and nxt == "queued"
            self.db.execute(
                "UPDATE terminal_commands SET state = ?, updated_at = ?, history = ?,"
                " attempts = ?, result = ?, reply = ?, reason = ?, confirmed_by = ?,"
                " published_at = ? WHERE id = ? AND state = ?",
                (
                    nxt,
                    at,
                    json.dumps(history, ensure_ascii=False),
                    attempts if attempts is not None else cur["attempts"],
                    result if result is not None else cur["result"],
                    json.dumps(reply, ensure_ascii=False) if reply is not None else rows[0][16],
                    reason if reason is not None else cur["reason"],
                    by if confirmed else cur["confirmed_by"],
                    None if confirmed else cur["published_at"],  # first published now
                    command_id,
                    cur["state"],
                ),
            )
            after = self.db.execute(f"{_SELECT} WHERE id = ?", (command_id,))
            return _row(after[0])

        return await self.run(do)

    async def due_to_expire(self, now: int) -> list[str]:
        """Ids of commands not yet sent whose expiry passed."""
        rows = await self.run(
            lambda: self.db.execute(
                "SELECT id FROM terminal_commands WHERE state IN"
                " ('awaiting_confirmation', 'queued') AND expires_at <= ?",
                (now,),
            )
        )
        return [str(r[0]) for r in rows]
