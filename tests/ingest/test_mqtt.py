"""The MQTT adapter against the real Mosquitto: batches out, acks only after the write."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import orjson
import pytest

from fleet.metrics import Metrics
from fleet.registry import Registry
from fleetwatch.config import parse_config
from ingest.config import MqttConfig
from ingest.core import Flush, IngestCore
from ingest.json_codec import JsonLimits
from ingest.mqtt import MqttIngestBase, make_ingest

pytestmark = pytest.mark.services


@pytest.fixture(params=["aiomqtt", "gmqtt", "paho", "fast"])
def client(request: pytest.FixtureRequest) -> str:
    """All four ingest clients pass the same tests."""
    return str(request.param)


NOW_MS = 1_764_034_200_000


def make(prefix: str, client_id: str, *, client: str, ack: str = "after_store"):
    cfg = parse_config(
        {
            "orgs": [{"id": "c", "name": "City"}],
            "vehicles": [
                {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": f"139{i:08d}", "org": "c"}
                for i in range(10)
            ],
        }
    )
    registry = Registry.from_config(cfg)
    core = IngestCore(registry, limits=JsonLimits(max_past_ms=10**13), max_rows=100, max_age_ms=20)
    q: asyncio.Queue[Flush | None] = asyncio.Queue(4)
    mcfg = MqttConfig(
        client_id=client_id,
        json_topic=f"{prefix}/fleet/+/position",
        jt808_topic="",
        ack=ack,
        client=client,
    )
    return make_ingest(mcfg, core, q, Metrics()), q


async def publish(prefix: str, n: int, port: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as pub:
        for k in range(n):
            body = {"ts": NOW_MS + k, "lat": 30.0, "lon": 106.0}
            await pub.publish(f"{prefix}/fleet/139{k % 10:08d}/position", orjson.dumps(body), qos=1)


async def collect(
    q: asyncio.Queue[Flush | None], n: int, ingest: MqttIngestBase | None, timeout: float = 10.0
) -> list[int]:
    seen: list[int] = []
    async with asyncio.timeout(timeout):
        while len(seen) < n:
            flush = await q.get()
            assert flush is not None
            seen.extend(flush.batch.ts.tolist())
            if ingest is not None:
                ingest.ack(flush.acks)
    return seen


async def test_batches_arrive_and_shutdown_sends_the_final_none(
    mosquitto: tuple[str, int], unique: str, client: str
) -> None:
    ingest, q = make(f"m{unique}", f"fw-m-{unique}", client=client)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))
    await asyncio.wait_for(ingest.connected.wait(), 5)
    await publish(f"m{unique}", 250, mosquitto[1])
    seen = await collect(q, 250, ingest)
    assert sorted(seen) == [NOW_MS + k for k in range(250)]
    stop.set()
    assert await asyncio.wait_for(q.get(), 5) is None
    ingest.finished.set()
    await asyncio.wait_for(task, 5)


async def test_unacknowledged_messages_are_redelivered_after_a_crash(
    mosquitto: tuple[str, int], unique: str, client: str
) -> None:
    prefix, cid = f"r{unique}", f"fw-r-{unique}"
    first, q1 = make(prefix, cid, client=client)
    task = asyncio.create_task(first.run(asyncio.Event()))
    await asyncio.wait_for(first.connected.wait(), 5)
    await publish(prefix, 120, mosquitto[1])
    got = await collect(q1, 120, None)  # received, never written, never acknowledged
    assert len(got) == 120
    task.cancel()  # the "crash": the connection goes away without a single PUBACK
    with contextlib.suppress(asyncio.CancelledError):
        await task

    second, q2 = make(prefix, cid, client=client)
    stop = asyncio.Event()
    task2 = asyncio.create_task(second.run(stop))
    again = await collect(q2, 120, second)
    assert sorted(again) == sorted(got)
    stop.set()
    second.finished.set()
    await asyncio.wait_for(task2, 5)

    # Everything was acknowledged this time: a third session gets nothing.
    third, q3 = make(prefix, cid, client=client)
    stop3 = asyncio.Event()
    task3 = asyncio.create_task(third.run(stop3))
    await asyncio.wait_for(third.connected.wait(), 5)
    await asyncio.sleep(0.5)
    stop3.set()
    third.finished.set()
    assert await asyncio.wait_for(q3.get(), 5) is None
    await asyncio.wait_for(task3, 5)
