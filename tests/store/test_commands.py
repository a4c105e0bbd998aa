"""The command table on SQLite and on the real PostgreSQL: transitions only along the table."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from store.commands import CommandStore
from tests.conftest import require_service
from web.accounts import _Db

T = TypeVar("T")
DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CommandStore]:
    if request.param == "sqlite":
        db = _Db("sqlite", str(tmp_path / "web.db"))
        s = CommandStore(db, run)
        await s.open()
        yield s
        db.close()
        return
    require_service("postgres")
    schema = f"cmd_{secrets.token_hex(4)}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    db = _Db("postgres", f"{DSN}?options=-csearch_path%3D{schema}")
    s = CommandStore(db, run)
    await s.open()
    try:
        yield s
    finally:
        db.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def command(cid: str, at: int, state: str = "queued", vehicle: str = "V1") -> dict[str, Any]:
    return {
        "id": cid,
        "vehicle": vehicle,
        "org": "city",
        "phone": "10001",
        "kind": "text",
        "command": {"kind": "text", "text": "请减速慢行", "flags": 5, "text_type": 1},
        "state": state,
        "created_by": "ws-op",
        "created_at": at,
        "expires_at": at + 60_000,
    }


async def test_a_command_moves_along_the_table_and_stays_final(store: CommandStore) -> None:
    await store.add(command("c1", 1000))
    got = await store.get("c1")
    assert got is not None and got["state"] == "queued"
    assert got["command"]["text"] == "请减速慢行"
    assert [c["id"] for c in await store.unpublished()] == ["c1"]
    await store.mark_published("c1", 1001)
    assert await store.unpublished() == []
    assert (await store.apply("c1", "sent", 1002, attempts=1))["state"] == "sent"  # type: ignore[index]
    done = await store.apply("c1", "acked", 1003, result=0, reply={"lat": 30.5})
    assert done is not None and done["state"] == "acked" and done["reply"] == {"lat": 30.5}
    assert await store.apply("c1", "timeout", 1004) is None  # late: final states stay
    assert await store.apply("nope", "acked", 1004) is None
    final = await store.get("c1")
    assert final is not None
    assert [h["state"] for h in final["history"]] == ["queued", "sent", "acked"]
    assert final["attempts"] == 1 and final["result"] == 0


async def test_confirmation_by_a_second_operator_then_published(store: CommandStore) -> None:
    await store.add(command("cut", 1000, state="awaiting_confirmation"))
    assert await store.unpublished() == []
    assert await store.apply("cut", "sent", 1001) is None  # never sent unconfirmed
    done = await store.apply("cut", "queued", 1002, by="admin", event="confirm")
    assert done is not None and done["state"] == "queued" and done["confirmed_by"] == "admin"
    assert [c["id"] for c in await store.unpublished()] == ["cut"]


async def test_expiry_and_per_vehicle_listing(store: CommandStore) -> None:
    await store.add(command("a", 1000))
    await store.add(command("b", 2000))
    await store.add(command("c", 3000, vehicle="V2"))
    await store.apply("b", "sent", 2500)
    assert await store.due_to_expire(61_000) == ["a"]  # b was sent: the gateway decides
    assert [c["id"] for c in await store.for_vehicle("V1")] == ["b", "a"]
    assert await store.open_count("V1") == 2
    await store.apply("a", "expired", 61_000)
    assert await store.open_count("V1") == 1
