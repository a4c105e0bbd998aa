"""Issue 12 through the real path: real Mosquitto, the whole service, SQLite history.

* A checksum-valid 0x0200 dated 2098 (a GPS week rollover) becomes a dead letter and
  the real positions after it still raise speeding.
* Rule state saved with a last point in the future is repaired at start-up, loudly.
* Retention runs in the service and shows in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import aiomqtt
import httpx
import numpy as np
import pytest
import redis.asyncio

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.service import RULE_STATE_KEY
from ingest.jt808.codec import encode_location
from rules.engine import RulesEngine
from store.factory import create_history, create_live
from store.history import AlarmQuery
from tests.conftest import free_port
from tests.fleetwatch.conftest import WORKDAY_10AM, running_service, service_config

pytestmark = [pytest.mark.services, pytest.mark.timeout(60)]

TOKEN = "blinding-room-token"
PHONE = "013900000001"
Y2098 = 4_044_499_200_000  # 2098-03-01T00:00Z
ACC_ON = 0b11  # JT/T 808 table 25: bit 0 ACC on, bit 1 positioned


def config(tmp_path: Path, prefix: str, web_port: int, **tables: dict[str, object]) -> object:
    return service_config(
        tmp_path,
        prefix,
        web_port,
        vehicles=[(f"v{i}", f"1390000000{i}", f"川X0000{i}") for i in range(3)],
        token=TOKEN,
        rules={"speeding": {"min_duration_s": 10, "close_after_s": 10, "default_limit_kmh": 80}},
        **tables,
    )


async def until(pred: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def dead_letters(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT reason, topic FROM dead_letters ORDER BY id").fetchall()


async def test_a_2098_frame_is_a_dead_letter_and_speeding_still_raises(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str
) -> None:
    prefix = f"blind{unique}"
    cfg = config(tmp_path, prefix, free_port())
    async with running_service(cfg) as svc:  # type: ignore[arg-type]
        async with aiomqtt.Client(*mosquitto) as pub:
            topic = f"{prefix}/jt808/{PHONE}/up"
            frame = encode_location(
                PHONE, 1, lat=30.45, lon=106.63, speed_kmh=40.0, heading=0, alt_m=300,
                time_ms=Y2098, status=ACC_ON,
            )  # fmt: skip
            await pub.publish(topic, frame, qos=1)

            async def taken() -> bool:  # decoded in a batch of its own, as in production
                core = svc.ingest.core
                return svc.pipeline.positions_processed + sum(core.rejected.values()) >= 1

            await until(taken)
            # 130 km/h for 30 s, one report per 5 s, then calm: one speeding episode.
            for k in range(12):
                frame = encode_location(
                    PHONE, 2 + k, lat=30.45 + k * 1e-3, lon=106.63,
                    speed_kmh=130.0 if k < 7 else 40.0, heading=0, alt_m=300,
                    time_ms=WORKDAY_10AM + k * 5000, status=ACC_ON,
                )  # fmt: skip
                await pub.publish(topic, frame, qos=1)

        async def speeding_closed() -> bool:
            rows = await svc.history.alarms(AlarmQuery(kinds=["speeding"]))
            return bool(rows) and rows[0]["state"] == "closed"

        await until(speeding_closed)
        rows = await svc.history.alarms(AlarmQuery(kinds=["speeding"]))
        assert len(rows) == 1 and not rows[0]["backfill"], rows
        assert svc.ingest.core.rejected["future_ts"] == 1
        assert int(svc.engine.state.last_ts[1]) == WORKDAY_10AM + 11 * 5000
    assert dead_letters(tmp_path / "h.db") == [("future_ts", f"{prefix}/jt808/{PHONE}/up")]


async def test_saved_state_in_the_future_is_repaired_at_start_up(
    tmp_path: Path,
    mosquitto: tuple[str, int],
    redis_server: tuple[str, int],
    unique: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"repair{unique}"
    port = free_port()
    host, rport = redis_server
    live = {"kind": "redis", "redis_url": f"redis://{host}:{rport}/0", "key_prefix": f"t{unique}:"}
    cfg = config(tmp_path, prefix, port, live=live)
    # What an earlier version saved after letting a 2098 point through for v1.
    registry = Registry.from_config(cfg)  # type: ignore[arg-type]
    old = RulesEngine(cfg.rules, registry)  # type: ignore[attr-defined]
    k = np.arange(8)
    opened = old.process(  # 130 km/h for 35 s, in 2098: a speeding episode opens
        PositionBatch.from_columns(
            vehicle=np.ones(8, np.int32), ts=Y2098 + k * 5000, lat=30.45 + k * 1e-3,
            lon=np.full(8, 106.63), speed=np.full(8, 130.0), acc=np.ones(8, bool),
        )
    )  # fmt: skip
    assert [e.kind for e in opened] == ["speeding"]
    history = create_history(cfg.store)  # type: ignore[attr-defined]
    await history.open(registry)
    await history.write_alarm_events(opened)
    await history.save_rule_state(RULE_STATE_KEY, old.state_bytes())
    await history.close()
    shared = create_live(cfg.live)  # type: ignore[attr-defined]
    await shared.open(registry)
    await shared.update_alarms(opened)  # what the desk saw before the restart
    await shared.close()

    with caplog.at_level(logging.ERROR, logger="fleetwatch.service"):
        async with running_service(cfg) as svc:  # type: ignore[arg-type]
            assert int(svc.engine.state.last_ts[1]) < WORKDAY_10AM
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            assert "fleetwatch_rule_state_repaired_total 1.0" in text
            (row,) = await svc.history.alarms(AlarmQuery(kinds=["speeding"]))
            assert row["state"] == "closed" and row["detail"]["closed_by_repair"]
            # The shared live state (Redis) no longer lists it as open either.
            assert not await svc.live.redis.hexists(svc.live.k_alarms, opened[0].id)
    assert any("v1" in r.getMessage() and "afresh" in r.getMessage() for r in caplog.records)
    client = redis.asyncio.Redis(host=host, port=rport)
    async for key in client.scan_iter(match=f"t{unique}:*"):
        await client.delete(key)
    await client.aclose()


async def test_retention_runs_in_the_service_and_is_metered(
    tmp_path: Path, mosquitto: tuple[str, int], unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import store.retention

    monkeypatch.setattr(store.retention, "FIRST_RUN_AFTER_S", 0.2)
    port = free_port()
    cfg = config(tmp_path, f"ret{unique}", port)
    registry = Registry.from_config(cfg)  # type: ignore[arg-type]
    history = create_history(cfg.store)  # type: ignore[attr-defined]
    await history.open(registry)
    recent = int(time.time() * 1000) - 86_400_000
    ancient = recent - 400 * 86_400_000  # past the 183 days positions are kept
    await history.write_positions(
        PositionBatch.from_columns(
            vehicle=np.array([0, 0]), ts=np.array([ancient, recent]),
            lat=np.array([30.4, 30.4]), lon=np.array([106.6, 106.6]),
        )
    )  # fmt: skip
    await history.close()
    async with running_service(cfg) as svc:  # type: ignore[arg-type]

        async def ran() -> bool:
            return svc.retention.runs._value.get() >= 1  # type: ignore[no-any-return]

        await until(ran)
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'fleetwatch_retention_removed_total{what="positions"} 1.0' in text
    assert "fleetwatch_retention_runs_total 1.0" in text
    assert "fleetwatch_retention_errors_total 0.0" in text
    assert "fleetwatch_retention_last_run_timestamp_seconds" in text
