"""``fleetwatch bench notify``: what queueing notifications adds to the alarm write.

Measures, on a temporary SQLite file (synchronous=FULL, as the store runs it),
one transaction that upserts N alarm events (the baseline) against the same
transaction plus :func:`~notify.outbox.enqueue_sqlite` (two channels on one
route). Medians of several runs, events/s.
"""

from __future__ import annotations

import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet.events import AlarmEvent, episode_id
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from notify.config import NotifyConfig
from notify.outbox import OUTBOX_DDL_SQLITE, enqueue_sqlite
from notify.routing import Router

__all__ = ["run"]


def _setup(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(OUTBOX_DDL_SQLITE)
    db.execute(
        "CREATE TABLE alarms (id TEXT PRIMARY KEY, state TEXT, ts INTEGER, detail TEXT,"
        " ack_user TEXT)"
    )
    return db


def run(quick: bool = False) -> dict[str, Any]:
    n, repeats = (200, 3) if quick else (2000, 5)
    orgs = [OrgConfig(id="city", name="广安市"), OrgConfig(id="qx", name="前锋区", parent="city")]
    vehicles = [
        VehicleConfig(id=f"v{i}", plate=f"川X{i:05d}", terminal=f"1{i:010d}", org="qx")
        for i in range(500)
    ]
    reg = Registry(vehicles, OrgTree.from_config(orgs))
    cfg = NotifyConfig.model_validate(
        {
            "channels": [
                {"type": "wecom", "name": "w", "url": "https://qyapi.weixin.qq.com/x?key=k"},
                {"type": "webhook", "name": "h", "url": "http://127.0.0.1/x"},
            ],
            "routes": [{"name": "duty", "channels": ["w", "h"], "orgs": ["city"]}],
        }
    )
    router = Router(cfg, reg)
    base: list[float] = []
    with_outbox: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            t0 = 1764034200000 + r * 10_000_000
            evs = [
                AlarmEvent(
                    id=episode_id(f"v{i % 500}", "speeding", t0 + i),
                    vehicle=i % 500,
                    vehicle_id=f"v{i % 500}",
                    kind="speeding",
                    action="open",
                    started_at=t0 + i,
                    ts=t0 + i,
                    lat=30.4,
                    lon=106.6,
                    detail={"limit_kmh": 80.0, "peak_kmh": 95.0},
                )
                for i in range(n)
            ]
            rows = [(e.id, e.state, e.ts, "{}") for e in evs]
            for outbox, out in ((False, base), (True, with_outbox)):
                db = _setup(str(Path(tmp) / f"b{r}{outbox}.db"))
                start = time.perf_counter()
                db.execute("BEGIN")
                db.executemany("INSERT INTO alarms (id, state, ts, detail) VALUES (?,?,?,?)", rows)
                if outbox:
                    enqueue_sqlite(db, evs, router)
                db.execute("COMMIT")
                out.append(n / (time.perf_counter() - start))
                db.close()
    return {
        "events": n,
        "repeats": repeats,
        "alarm_upsert_events_per_s": round(statistics.median(base)),
        "alarm_upsert_plus_outbox_events_per_s": round(statistics.median(with_outbox)),
        "outbox_rows_per_event": 2,
    }
