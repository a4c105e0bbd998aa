"""The end-to-end benchmark's parts: the load generator, CPU accounting, profile summary.

The whole benchmark takes about a minute (``fleetwatch bench e2e --quick``), so
it is not run here; its pieces are, against a Mosquitto of its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.mqtt_wire import MqttWire
from simulator import bench
from simulator.bench_pub import _Vehicle, encode_connect, encode_publish, position_body
from tests.simulator.conftest import Collector


def test_prebuilt_packets_are_the_messages_they_claim() -> None:
    veh = _Vehicle("p/fleet/13900000007/position", 30.4, 106.58)
    ts = b"1764034200123"
    got: list[tuple[str, bytes, int, int]] = []
    wire = MqttWire(v5=False)
    rest = wire.feed(
        veh.head + ts + veh.tail + veh.head + ts + veh.tail_sos, lambda *a: got.append(a)
    )
    assert rest == []
    assert [t for t, _, _, _ in got] == ["p/fleet/13900000007/position"] * 2
    first, second = (orjson.loads(p) for _, p, _, _ in got)
    assert first["ts"] == 1764034200123 and first["alarm"] == 0 and second["alarm"] == 1
    assert first["lat"] == 30.4 and first["acc"] is True
    assert encode_publish("t", b"x")[:2] == b"\x30\x04"
    assert encode_connect("c")[0] == 0x10
    assert len(position_body(1764034200000, 1.0, 2.0, 0)) == len(
        position_body(9 * 10**12, 1.0, 2.0, 1)
    )


def test_cpu_percent_names_the_rest_of_the_machine() -> None:
    cpu0 = {"machine (all cores)": 10.0, "service": 1.0, "redis (whole server)": 0.0}
    cpu1 = {"machine (all cores)": 12.0, "service": 2.0, "redis (whole server)": 0.5}
    out = bench._percent(cpu0, cpu1, 2.0)
    assert out["service"] == 50.0 and out["machine (all cores)"] == 100.0
    assert out["everything else on the machine"] == 50.0


def test_profile_summary_reads_collapsed_stacks(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text(
        "main (a.py:1);loop (a.py:5);add (core.py:10) 30\n"
        "main (a.py:1);loop (a.py:6);feed (mqtt.py:3) 10\n"
    )
    out = bench._profile_summary(path)
    assert out["samples"] == 40
    assert out["self_percent"][0] == ("add (core.py)", 75.0)
    assert ("loop (a.py)", 100.0) in out["total_percent"]


def test_prebuilt_qos1_packets_carry_the_packet_id() -> None:
    veh = _Vehicle("p/fleet/13900000007/position", 30.4, 106.58)
    ts = b"1764034200123"
    got: list[tuple[str, bytes, int, int]] = []
    wire = MqttWire(v5=False)
    data = b"".join(veh.parts(ts, False, (513).to_bytes(2, "big")))
    data += b"".join(veh.parts(ts, True, (65535).to_bytes(2, "big")))
    data += b"".join(veh.parts(ts, False, None))
    assert wire.feed(data, lambda *a: got.append(a)) == []
    assert [(q, mid) for _, _, q, mid in got] == [(1, 513), (1, 65535), (0, 0)]
    bodies = [orjson.loads(p) for _, p, _, _ in got]
    assert [b["alarm"] for b in bodies] == [0, 1, 0]
    assert all(b["ts"] == 1764034200123 for b in bodies)
    assert encode_publish("t", b"x", packet_id=7) == b"\x32\x06\x00\x01t\x00\x07x"


def _run(client: str, mode: str, rep: int, rate: int) -> dict[str, Any]:
    return {
        "client": client,
        "mode": mode,
        "repeat": rep,
        "max_sustained_msgs_per_s": rate,
        "per_core_msgs_per_s": rate * 2,
        "alarm_p99_at_half_max_ms": 100.0,
    }


def test_ratios_are_taken_inside_each_repeat_and_the_decision_follows_the_25_percent_rule() -> None:
    # Repeat 1 ran on a busier machine: every client slower, the ratios unchanged.
    runs = [
        _run("fast", "no_loss", 0, 40_000),
        _run("gmqtt", "no_loss", 0, 28_000),
        _run("paho", "no_loss", 0, 12_000),
        _run("fast", "no_loss", 1, 20_000),
        _run("gmqtt", "no_loss", 1, 14_000),
        _run("paho", "no_loss", 1, 6_000),
        _run("fast", "no_loss", 2, 30_000),
        _run("gmqtt", "no_loss", 2, 21_000),
        _run("paho", "no_loss", 2, 9_000),
    ]
    base = {"no_loss": {"mosquitto_sub_msgs_per_s": 60_000}}
    out = bench.summarize(runs, base)
    gm = out["no_loss"]["clients"]["gmqtt"]
    assert gm["ratio_to_fast"] == [0.7, 0.7, 0.7] and gm["median_msgs_per_s"] == 21_000
    assert gm["median_ratio_to_mosquitto_sub"] == 0.35
    assert out["decision"]["best_library"] == "gmqtt"
    assert out["decision"]["keep_hand_written_client"] is True  # 0.70 < 0.75
    faster = [dict(r, max_sustained_msgs_per_s=r["max_sustained_msgs_per_s"] * 1.1) for r in runs]
    for r, f in zip(runs, faster, strict=True):
        if r["client"] == "fast":
            f["max_sustained_msgs_per_s"] = r["max_sustained_msgs_per_s"]
    out = bench.summarize(faster, base)
    assert out["decision"]["best_library_ratio_to_fast"] == 0.77
    assert out["decision"]["keep_hand_written_client"] is False
    head = bench._headline(out)
    assert head["client"] == "gmqtt" and "no_loss / gmqtt" in head["rows"]


@pytest.mark.services
def test_publishers_deliver_every_message_they_count(tmp_path: Path) -> None:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto is not installed")
        pytest.skip("mosquitto is not installed")
    broker, port = bench._mosquitto(tmp_path)
    pubs = None
    try:
        prefix = f"tb{os.getpid()}/"
        sub = Collector("127.0.0.1", port, f"{prefix}fleet/+/position", f"{prefix}sub")
        try:
            pubs = bench._Publishers(port, prefix, 40, 2)
            sent = asyncio.run(_publish(pubs))  # returns once the broker has taken all
            deadline = time.monotonic() + 10
            while len(sub.messages) < sent["sent"] and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            sub.close()
        assert sent["sent"] >= 2900
        assert len(sent["sos"]) >= 2  # two publishers, one SOS each at least
        lines = [payload for _, payload in sub.messages]
        assert len(lines) == sent["sent"]
        assert all(orjson.loads(x)["lat"] >= 30.4 for x in lines)
        # At QoS 1 the job returns once the broker has acknowledged every message.
        assert sent["qos1"]["pubacks"] == sent["qos1"]["sent"] >= 1900
    finally:
        if pubs is not None:
            pubs.stop()
        broker.terminate()
        broker.wait(10)


async def _publish(pubs: bench._Publishers) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # the publishers connect
    first = await pubs.job(("rate", 3000, 1.0, 4.0), 30)
    qos1 = await pubs.job(("rate", 2000, 1.0, 0.0), 30, qos=1)
    return {**first, "sent": first["sent"] + qos1["sent"], "qos1": qos1}


def test_spawned_publisher_module_is_importable() -> None:
    # The publishers run in spawned processes: everything they need must import cleanly.
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_noop)
    p.start()
    p.join(20)
    assert p.exitcode == 0


def _noop() -> None:
    import simulator.bench_pub  # noqa: F401
