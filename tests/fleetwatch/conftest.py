"""Helpers for tests that run the whole service in-process against real services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from fleetwatch.config import Config, parse_config
from fleetwatch.service import Service, build_service, run_service

# Monday 2025-11-24 10:00 +08:00: a workday, inside working hours, so that only the rule a
# test is about fires (positions from the past also need ingest.max_past_days raised).
WORKDAY_10AM = 1_763_949_600_000


def service_config(
    tmp_path: Path,
    prefix: str,
    web_port: int,
    *,
    vehicles: list[tuple[str, str, str]],
    token: str,
    **tables: dict[str, Any],
) -> Config:
    """A configuration on the shared broker with private topics ``{prefix}/...``.

    ``vehicles`` are (id, terminal, plate); ``tables`` are merged over the defaults
    (one level deep), e.g. ``rules={"offline": {"enabled": False}}``.
    """
    doc: dict[str, Any] = {
        "mqtt": {
            "client_id": f"fw-test-{prefix}",
            "json_topic": f"{prefix}/fleet/+/position",
            "jt808_topic": f"{prefix}/jt808/+/up",
            "persistent_session": False,
        },
        "ingest": {"batch_max_age_ms": 20, "max_past_days": 36500},
        "store": {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")},
        "web": {
            "port": web_port,
            "feed_interval_ms": 100,
            "tokens": [{"token": token, "org": "c", "role": "operator"}],
        },
        "rules": {"offline": {"enabled": False}},  # positions from the past: all offline
        "orgs": [{"id": "c", "name": "City"}],
        "vehicles": [
            {"id": vid, "plate": plate, "terminal": terminal, "org": "c"}
            for vid, terminal, plate in vehicles
        ],
    }
    for name, table in tables.items():
        doc[name] = {**doc.get(name, {}), **table}
    return parse_config(doc, source=str(tmp_path / "fleet.toml"))


@contextlib.asynccontextmanager
async def running_service(cfg: Config, *, timeout: float = 30.0) -> AsyncIterator[Service]:
    """The service, started and connected to the broker; stopped cleanly on exit."""
    stop, started = asyncio.Event(), asyncio.Event()
    svc = build_service(cfg)
    task = asyncio.create_task(run_service(cfg, stop, started=started, service=svc))
    try:
        await asyncio.wait_for(started.wait(), timeout)
        await asyncio.wait_for(svc.ingest.connected.wait(), timeout)
        yield svc
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout)


async def frames_until(ws: Any, pred: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Live-feed frames received until ``pred(frames)`` holds; fail after ``timeout``."""
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            raw = await asyncio.wait_for(ws.recv(), deadline - loop.time())
        except TimeoutError:
            break
        got.append(orjson.loads(raw))
        if pred(got):
            return got
    raise AssertionError(f"condition not met within {timeout}s; last frames {got[-3:]}")
