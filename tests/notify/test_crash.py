"""Kill the notifier mid-delivery and restart it: nothing lost, duplicates only by key.

The notifier runs in a subprocess against an SQLite outbox and a receiver that
fails, stalls and answers slowly at random. It is SIGKILLed while requests are
in flight and rows are leased; a second process takes over once the leases
expire. Every message must arrive, and whatever arrived twice must carry the
same idempotency key and the same body, so the receiver can drop it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from fleet.registry import Registry
from notify.config import NotifyConfig
from notify.routing import Router, delivery_key
from tests.notify.conftest import HOOK_SECRET, Receiver, event, sqlite_db, write_alarms_sqlite

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
N = 60


async def start(path: str, cfg: NotifyConfig) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.notify.notifier_proc",
        path,
        json.dumps(_plain(cfg)),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _plain(cfg: NotifyConfig) -> dict[str, object]:
    data = cfg.model_dump(mode="json")
    for ch in data["channels"]:
        if ch.get("secret") is not None:
            ch["secret"] = HOOK_SECRET.decode()  # model_dump hides secrets as "**********"
    return data


async def until(cond: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def states(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT state, count(*) FROM notify_outbox GROUP BY state"))


async def test_sigkill_mid_delivery_then_restart(
    registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.p_fail, receiver.p_stall, receiver.p_slow = 0.15, 0.1, 0.7
    receiver.stall_s, receiver.slow_s = 1.0, (0.1, 0.4)
    cfg = NotifyConfig.model_validate(
        {
            "enabled": True,
            "channels": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": f"{receiver.url}/hook",
                    "secret": HOOK_SECRET.decode(),
                    "timeout_s": 0.5,
                }
            ],
            "routes": [{"name": "duty", "channels": ["hook"], "storm_per_minute": 1000}],
            "lease_s": 2.0,
            "claim_batch": 6,
            "concurrency": 6,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.3,
            "max_attempts": 100,
            "poll_interval_s": 0.05,
        }
    )
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    t0 = int(time.time() * 1000)
    evs = [event(registry, i % 12, started_at=t0 + i) for i in range(N)]
    assert write_alarms_sqlite(db, evs, Router(cfg, registry)) == N
    keys = {r[0] for r in db.execute("SELECT key FROM notify_outbox")}
    expected = {delivery_key(k) for k in keys}

    first = await start(path, cfg)
    try:
        await until(lambda: len(receiver.unique("/hook")) >= N // 4 and receiver.inflight, 30)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    now = int(time.time() * 1000)
    leased = db.execute(
        "SELECT count(*) FROM notify_outbox WHERE state = 'pending' AND lease_until > ?", (now,)
    ).fetchone()[0]
    sent_before = states(path).get("sent", 0)
    assert leased >= 1, "the kill must hit rows in delivery"
    assert sent_before < N

    second = await start(path, cfg)
    try:
        await until(lambda: states(path) == {"sent": N}, 40)
    finally:
        second.send_signal(signal.SIGKILL)
        await second.wait()

    accepted = receiver.accepted("/hook")
    got = {h.headers["idempotency-key"] for h in accepted}
    assert got == expected  # nothing lost, nothing foreign
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for h in accepted:
        bodies[h.headers["idempotency-key"]].add(h.body)
    assert all(len(b) == 1 for b in bodies.values())  # a duplicate is the same message
    dupes = len(accepted) - len(expected)
    assert dupes == sum(h.duplicate for h in accepted)
    print(f"leased at kill: {leased}, sent before kill: {sent_before}, duplicates: {dupes}")
