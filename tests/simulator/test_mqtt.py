"""The publishers against the real Mosquitto: every report arrives, JSON and JT/T 808."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import replace

import orjson
import pytest

from ingest.jt808.codec import decode_frame
from simulator.fleet import Fleet
from simulator.mqtt import publish_fleet
from simulator.run import DEFAULT_SCENARIO, _day_start
from tests.simulator.conftest import Collector

pytestmark = pytest.mark.services

DAY0 = _day_start(dt.date(2026, 11, 24))
SPEC = replace(DEFAULT_SCENARIO, vehicles=10, signal_loss_share=1.0, ordered_orgs=0)
END = DAY0 + 12 * 3_600_000


def expected() -> int:
    from simulator.wire import groups

    cols = Fleet(SPEC, DAY0).step(END)
    return sum(1 for _ in groups(cols))


async def wait_for(c: Collector, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(c.messages) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("protocol", ["json", "jt808"])
async def test_half_a_day_in_seconds_arrives_whole(
    collector: Collector, mosquitto: tuple[str, int], unique: str, protocol: str
) -> None:
    steps: list[int] = []
    sent = await publish_fleet(
        SPEC,
        *mosquitto,
        stop=asyncio.Event(),
        speedup=43_200 / 2,  # twelve hours in two seconds
        protocol=protocol,  # type: ignore[arg-type]
        topic_prefix=f"sim{unique}/",
        start_ms=DAY0,
        end_ms=END,
        on_step=lambda now, n: steps.append(now),
        client_id=f"sim-test-pub-{unique}",
    )
    assert sent == expected()
    assert steps[-1] == END and steps == sorted(steps)
    await wait_for(collector, sent)
    data = [(t, b) for t, b in collector.messages if not t.endswith("drained")]
    assert len(data) == sent
    if protocol == "json":
        assert all("/fleet/" in t for t, _ in data)
        arrays = [b for _, b in data if b.startswith(b"[")]
        assert arrays and all(isinstance(orjson.loads(b), list) for b in arrays)
    else:
        for t, b in data:
            d = decode_frame(b)
            assert t == f"sim{unique}/jt808/{d.header.phone.lstrip('0')}/up"
