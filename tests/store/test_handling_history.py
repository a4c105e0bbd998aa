"""The handling record of an episode in both history stores; ids from earlier versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fleet.events import ALARM_ID_RE, AlarmEvent, episode_id
from fleet.registry import Registry
from store.config import StoreConfig
from store.history import HistoryStore
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory

T0 = 1_764_034_200_000


def sos(reg: Registry, v: int = 0) -> AlarmEvent:
    vid = reg.ids[v]
    return AlarmEvent(
        id=episode_id(vid, "terminal_alarm", T0, sub="sos"),
        vehicle=v,
        vehicle_id=vid,
        kind="terminal_alarm",
        action="open",
        started_at=T0,
        ts=T0,
        lat=30.5,
        lon=106.6,
        severity="critical",
        detail={"name": "sos"},
    )


async def test_a_second_acknowledgement_never_overwrites_the_first(
    history: HistoryStore, registry: Registry
) -> None:
    ev = sos(registry)
    assert ALARM_ID_RE.match(ev.id) and "/" not in ev.id
    await history.write_alarm_events([ev])
    assert await history.ack_alarm(ev.id, "op1", "电话联系驾驶员", False, T0 + 1)
    assert await history.ack_alarm(ev.id, "op2", "已到现场", True, T0 + 2)
    assert await history.ack_alarm(ev.id, "op2", "处置完毕", True, T0 + 3, action="close")
    assert not await history.ack_alarm("v9:nothing:1", "op1", "", False, T0)
    [a] = await history.alarms()
    assert a["ack"] == {"user": "op1", "at": T0 + 1, "note": "电话联系驾驶员", "handled": True}
    assert [(e["user"], e["action"], e["at"], e["note"]) for e in a["acks"]] == [
        ("op1", "ack", T0 + 1, "电话联系驾驶员"),
        ("op2", "ack", T0 + 2, "已到现场"),
        ("op2", "close", T0 + 3, "处置完毕"),
    ]


async def test_rows_of_an_earlier_version_are_migrated(tmp_path: Path, registry: Registry) -> None:
    """An alarms table without ``acks``, an id with '/', an ack kept the old way."""
    path = tmp_path / "old.db"
    store = SQLiteHistory(StoreConfig(), path=str(path))
    await store.open(registry)
    ev = sos(registry)
    await store.write_alarm_events([ev])
    await store.close()
    old_id = ev.id.replace("terminal_alarm.", "terminal_alarm/")
    db = sqlite3.connect(path)
    with db:
        db.execute("ALTER TABLE alarms DROP COLUMN acks")
        db.execute(
            "UPDATE alarms SET id = ?, ack_user = 'op0', ack_at = ?, ack_note = 'old', handled = 0",
            (old_id, T0 + 1),
        )
    db.close()
    store = SQLiteHistory(StoreConfig(), path=str(path))
    await store.open(registry)
    try:
        [a] = await store.alarms()
        assert a["id"] == ev.id
        assert a["acks"] == [
            {"user": "op0", "at": T0 + 1, "note": "old", "handled": False, "action": "ack"}
        ]
        assert await store.ack_alarm(ev.id, "op1", "new", False, T0 + 2)
        [a] = await store.alarms()
        assert a["ack"]["user"] == "op0"
        assert [e["user"] for e in a["acks"]] == ["op0", "op1"]
    finally:
        await store.close()


async def test_postgres_rows_of_an_earlier_version_are_migrated(
    pg_config: StoreConfig, registry: Registry
) -> None:
    import psycopg

    store = PostgresHistory(pg_config)
    await store.open(registry)
    ev = sos(registry)
    await store.write_alarm_events([ev])
    await store.close()
    old_id = ev.id.replace("terminal_alarm.", "terminal_alarm/")
    s = pg_config.postgres_schema
    with psycopg.connect(pg_config.postgres_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {s}.alarms DROP COLUMN acks")
        conn.execute(
            f"UPDATE {s}.alarms SET id = %s, ack_user = 'op0', ack_at = %s, ack_note = 'old',"
            " handled = false",
            (old_id, T0 + 1),
        )
    store = PostgresHistory(pg_config)
    await store.open(registry)
    try:
        assert await store.ack_alarm(ev.id, "op1", "new", True, T0 + 2)
        [a] = await store.alarms()
        assert a["id"] == ev.id and a["ack"]["user"] == "op0" and a["ack"]["handled"]
        assert [(e["user"], e["action"]) for e in a["acks"]] == [("op0", "ack"), ("op1", "ack")]
    finally:
        await store.close()
