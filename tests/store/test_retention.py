"""Retention: a dry run says what a run removes; the loop runs, meters and survives outages."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from fleet.registry import Registry
from store.config import StoreConfig
from store.history import DAY_MS, DeadLetter, HistoryStore
from store.postgres import PostgresHistory
from store.retention import RetentionMetrics, describe, retention_loop, run_retention
from tests.conftest import free_port
from tests.store.test_history import drive, event

pytestmark = pytest.mark.services


async def test_a_dry_run_removes_nothing_and_says_what_a_run_removes(
    history: HistoryStore, registry: Registry
) -> None:
    now = time.time_ns() // 1_000_000
    old = now - 190 * DAY_MS
    await history.write_positions(drive(0, old, 10))
    await history.write_positions(drive(0, now - DAY_MS, 10))
    await history.write_alarm_events(
        [event(registry, 1, "speeding", now - 1100 * DAY_MS, "close", old, ended_at=old - 1)]
    )
    # A closed episode past three years goes; dead letters after 30 days.
    await history.write_alarm_events(
        [
            event(
                registry, 2, "speeding", now - 1200 * DAY_MS, "close", now - 1199 * DAY_MS,
                ended_at=now - 1199 * DAY_MS,
            )
        ]
    )  # fmt: skip
    await history.write_dead_letters([DeadLetter(old, "t", None, "r", "", b"")] * 3)
    would = await history.apply_retention(now, dry_run=True)
    again = await history.apply_retention(now, dry_run=True)
    assert would == again  # nothing was removed by the dry run
    assert would["alarms"] == 1 and would["dead_letters"] == 3
    assert would.get("positions", would.get("position_partitions")) >= 1
    assert await history.apply_retention(now) == would
    assert await history.apply_retention(now, dry_run=True) == dict.fromkeys(would, 0)


async def test_the_loop_runs_meters_and_counts_a_failed_run(registry: Registry) -> None:
    # A PostgreSQL nobody listens on: every run fails with ServiceUnavailable.
    dead = PostgresHistory(
        StoreConfig(
            kind="postgres", postgres_dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
        )
    )
    dead._registry = registry  # opened, as if the database went away after start-up
    metrics = RetentionMetrics(CollectorRegistry())
    stop = asyncio.Event()
    task = asyncio.create_task(
        retention_loop(dead, stop, interval_s=0.05, metrics=metrics, first_after_s=0.01)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while metrics.errors._value.get() < 2 and loop.time() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert metrics.errors._value.get() >= 2 and metrics.runs._value.get() == 0


async def test_run_retention_meters_what_it_removed(history: HistoryStore) -> None:
    now = time.time_ns() // 1_000_000
    await history.write_dead_letters([DeadLetter(now - 40 * DAY_MS, "t", None, "r", "", b"")])
    metrics = RetentionMetrics(CollectorRegistry())
    removed = await run_retention(history, now, metrics=metrics)
    assert removed["dead_letters"] == 1
    assert metrics.removed.labels("dead_letters")._value.get() == 1
    assert metrics.last_run._value.get() == now / 1000


def test_describe_says_it_in_chinese_then_english() -> None:
    text = describe({"positions": 3, "alarms": 0}, dry_run=True)
    zh, en = text.split("\n")
    assert zh.startswith("试运行") and "位置点 3" in zh
    assert en.startswith("dry run") and "positions 3" in en


async def test_sqlite_deletes_in_bounded_chunks(registry: Registry) -> None:
    from store.sqlite import SQLiteHistory

    store = SQLiteHistory(StoreConfig(retention_chunk_rows=100), path=":memory:")
    await store.open(registry)
    now = time.time_ns() // 1_000_000
    await store.write_positions(drive(0, now - 300 * DAY_MS, 250, step_ms=1000))
    await store.write_positions(drive(1, now - DAY_MS, 5))
    assert (await store.apply_retention(now))["positions"] == 250  # 100 + 100 + 50
    assert (await store.track(registry.ids[1], 0, now))["ts"].size == 5
    await store.close()


def test_packed_days_are_not_called_removed() -> None:
    from prometheus_client import CollectorRegistry

    from store.retention import RetentionMetrics, describe, run_retention

    text = describe({"alarms": 2, "days_packed": 3}, dry_run=False)
    assert text.startswith("已删除：已结束报警 2；已打包 3 个已结束的日")
    assert "days_packed" not in text

    class _History:
        async def apply_retention(self, now_ms: int, *, dry_run: bool) -> dict[str, int]:
            return {"alarms": 2, "days_packed": 3}

    reg = CollectorRegistry()
    m = RetentionMetrics(reg)
    import asyncio

    asyncio.run(run_retention(_History(), 0, metrics=m))
    assert reg.get_sample_value("fleetwatch_retention_packed_days_total") == 3
    assert (
        reg.get_sample_value("fleetwatch_retention_removed_total", {"what": "days_packed"}) is None
    )
    assert reg.get_sample_value("fleetwatch_retention_removed_total", {"what": "alarms"}) == 2
