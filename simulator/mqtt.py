"""Publish a simulated fleet to an MQTT broker, as JSON or as JT/T 808 frames.

Simulated time runs ``speedup`` times faster than the wall clock from
``start_ms``; every tick the fleet is stepped to the simulated now and what it
reports is published. paho-mqtt's network loop runs in its own thread (about
twice the throughput of an asyncio client, measured in simulator/bench.py);
this coroutine only paces. ``max_rate`` caps messages per wall second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

import paho.mqtt.client as paho

from fleet.cluster import partition_of, partition_topic
from simulator.fleet import Fleet, FleetSpec
from simulator.pacing import hold_rate, sim_window, wait_tick
from simulator.wire import json_messages, jt808_messages

__all__ = ["connect", "partitioned", "publish_fleet"]

log = logging.getLogger(__name__)


def connect(host: str, port: int, client_id: str, *, max_inflight: int = 1000) -> paho.Client:
    """A connected paho client with its network loop running in a thread."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    c.max_inflight_messages_set(max_inflight)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    return c


def drain(client: paho.Client, timeout: float = 10.0) -> None:
    """Wait until everything queued so far has left: a QoS 1 marker's PUBACK follows it."""
    info = client.publish("fleet-sim/drained", b"", qos=1)
    with contextlib.suppress(RuntimeError, ValueError):
        info.wait_for_publish(timeout)


def partitioned(
    msgs: list[tuple[str, bytes]], partitions: int, prefix: str = ""
) -> list[tuple[str, bytes]]:
    """Each message on its partition's topic (``p{k}/`` before the topic, fleet.cluster):
    the terminal is the segment after ``fleet/`` or ``jt808/``. Unchanged with 0."""
    if partitions <= 0:
        return msgs
    out = []
    for topic, body in msgs:
        rest = topic[len(prefix) :]
        terminal = rest.split("/", 2)[1]
        out.append(
            (prefix + partition_topic(rest, partition_of(terminal, partitions), partitions), body)
        )
    return out


async def publish_fleet(
    spec: FleetSpec,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    speedup: float = 1.0,
    qos: int = 0,
    duration_s: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
    protocol: Literal["json", "jt808"] = "json",
    topic_prefix: str = "",
    start_ms: int | None = None,
    end_ms: int | None = None,
    max_rate: float | None = None,
    fleet: Fleet | None = None,
    on_step: Callable[[int, int], None] | None = None,
    client_id: str | None = None,
    partitions: int = 0,
) -> int:
    """Publish until ``stop`` is set, ``duration_s`` of wall time passed or simulated time
    reached ``end_ms``; return the number of messages sent. With ``partitions`` > 0 each
    message goes to its partition's ``p{k}/`` topic (a cluster's engine nodes).
    ``on_step(sim_now_ms, sent)`` is called after each tick's messages are handed to the
    client."""
    wall0 = clock()
    sim0, end_ms = sim_window(wall0, speedup, duration_s, start_ms, end_ms)
    fleet = fleet or Fleet(spec, sim0)
    serials: dict[int, int] = {}
    cid = client_id or f"fleetwatch-sim-{spec.seed}-{int(wall0 * 1000) % 1_000_000}"
    client = await asyncio.to_thread(connect, host, port, cid)
    sent = 0
    k = 0
    try:
        while not stop.is_set():
            wall = clock()
            if duration_s is not None and wall - wall0 >= duration_s:
                break
            sim_now = sim0 + int((wall - wall0) * speedup * 1000)
            last = end_ms is not None and sim_now >= end_ms
            if last and end_ms is not None:
                sim_now = end_ms
            cols = fleet.step(sim_now)
            if protocol == "json":
                msgs = json_messages(cols, topic_prefix)
            else:
                msgs = jt808_messages(cols, serials, topic_prefix)
            msgs = partitioned(msgs, partitions, topic_prefix)
            for topic, body in msgs:
                client.publish(topic, body, qos=qos)
                sent += 1
                if sent % 100 == 0:
                    await hold_rate(sent, max_rate, wall0, clock)
            if on_step is not None:
                on_step(sim_now, sent)
            if on_progress is not None:
                on_progress(sent)
            if last:
                break
            k += 1
            await wait_tick(stop, wall0, k, clock)
        await asyncio.to_thread(drain, client)
    finally:
        client.loop_stop()
        client.disconnect()
    return sent
