"""Retention in the running service: what is past its time is removed, metered and logged.

:func:`run_retention` runs :meth:`~store.history.HistoryStore.apply_retention` once
(or, with ``dry_run``, asks what it would remove) and logs the result;
:func:`retention_loop` runs it every ``[store] retention_interval_s`` until told to
stop — the first run soon after start-up, so a service restarted every night still
runs it. A failed run (database down) is logged, counted and tried again at the next
interval; it never stops the service. Metrics, in the service's registry:

* ``fleetwatch_retention_removed_total{what}`` — rows (SQLite positions, alarms,
  dead letters) or daily partitions (PostgreSQL ``position_partitions``) removed
* ``fleetwatch_retention_runs_total``, ``fleetwatch_retention_errors_total``
* ``fleetwatch_retention_last_run_timestamp_seconds`` — end of the last good run
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet import aio
from fleet.errors import ServiceUnavailable

__all__ = ["RetentionMetrics", "retention_loop", "run_retention"]

log = logging.getLogger(__name__)

FIRST_RUN_AFTER_S = 60.0  # after start-up: let the service settle, then clean up


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.removed = Counter(
            "fleetwatch_retention_removed_total",
            "rows (or daily partitions) removed by retention",
            ["what"],
            registry=registry,
        )
        self.packed = Counter(
            "fleetwatch_retention_packed_days_total",
            "closed days packed into the columnar history by the retention run",
            registry=registry,
        )
        self.runs = Counter(
            "fleetwatch_retention_runs_total", "retention runs that finished", registry=registry
        )
        self.errors = Counter(
            "fleetwatch_retention_errors_total", "retention runs that failed", registry=registry
        )
        self.last_run = Gauge(
            "fleetwatch_retention_last_run_timestamp_seconds",
            "when the last retention run finished (epoch seconds)",
            registry=registry,
        )


async def run_retention(
    history: Any,
    now_ms: int,
    *,
    metrics: RetentionMetrics | None = None,
    dry_run: bool = False,
) -> dict[str, int]:
    """One retention run; returns what was (``dry_run``: would be) removed, by table."""
    try:
        removed: dict[str, int] = await history.apply_retention(now_ms, dry_run=dry_run)
    except Exception:
        if metrics is not None:
            metrics.errors.inc()
        raise
    what = ", ".join(f"{k} {v}" for k, v in removed.items())
    log.info("retention%s: %s", " (dry run, nothing removed)" if dry_run else "", what)
    if metrics is not None and not dry_run:
        for k, v in removed.items():
            if k == PACKED_KEY:
                metrics.packed.inc(v)
            else:
                metrics.removed.labels(k).inc(v)
        metrics.runs.inc()
        metrics.last_run.set(now_ms / 1000)
    return removed


async def retention_loop(
    history: Any,
    stop: asyncio.Event,
    *,
    interval_s: float,
    metrics: RetentionMetrics,
    clock: Callable[[], float] = time.time,
    first_after_s: float | None = None,
) -> None:
    """Run retention every ``interval_s`` (the first after ``first_after_s``, by default
    :data:`FIRST_RUN_AFTER_S`) until ``stop`` is set."""
    wait = min(FIRST_RUN_AFTER_S if first_after_s is None else first_after_s, interval_s)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await aio.wait_for(stop.wait(), wait)
        if stop.is_set():
            return
        wait = interval_s
        try:
            await run_retention(history, int(clock() * 1000), metrics=metrics)
        except ServiceUnavailable as exc:
            log.warning("retention not run (%s); will try again in %.0f s", exc, interval_s)
        except Exception:
            log.exception("retention failed; will try again in %.0f s", interval_s)


_WHAT_ZH = {
    "positions": "位置点",
    "position_partitions": "位置日分区",
    "alarms": "已结束报警",
    "dead_letters": "死信",
    "packed_vehicle_days": "已打包的车辆日",
    "late_positions": "迟到位置点",
}
# Not a removal: closed days packed into the columnar history (docs/storage.md).
PACKED_KEY = "days_packed"


def describe(removed: dict[str, int], *, dry_run: bool) -> str:
    """What a run removed (or would remove), in Chinese, then English."""
    gone = {k: v for k, v in removed.items() if k != PACKED_KEY}
    zh = "，".join(f"{_WHAT_ZH.get(k, k)} {v}" for k, v in gone.items())
    en = ", ".join(f"{k} {v}" for k, v in gone.items())
    if PACKED_KEY in removed:
        n = removed[PACKED_KEY]
        zh += f"；{'将打包' if dry_run else '已打包'} {n} 个已结束的日"
        en += f"; {'would pack' if dry_run else 'packed'} {n} closed day(s)"
    if dry_run:
        return f"试运行，未删除任何数据。将删除：{zh}\ndry run, nothing removed. Would remove: {en}"
    return f"已删除：{zh}\nremoved: {en}"


async def retention_once(
    config: Any, *, dry_run: bool, now_ms: int | None = None
) -> dict[str, int]:
    """``fleetwatch retention``: open the configured history, run retention once, close it."""
    from fleet.registry import Registry
    from store.factory import create_history

    history = create_history(config.store)
    await history.open(Registry.from_config(config))
    try:
        when = int(time.time() * 1000) if now_ms is None else now_ms
        return await run_retention(history, when, dry_run=dry_run)
    finally:
        await history.close()
