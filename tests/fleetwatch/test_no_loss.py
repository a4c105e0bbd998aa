"""kill -9 in the middle of 50,000 positions: after a restart every one is stored exactly once.

The broker is a Mosquitto of our own started from deploy/mosquitto.conf; the service runs as
``fleetwatch serve`` in a subprocess with PostgreSQL history in a private schema, MQTT 5,
a persistent session and acknowledgement after the durable write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import psycopg
import pytest

from simulator.toml import dumps
from tests.brokers import Broker
from tests.conftest import free_port

pytestmark = [pytest.mark.services, pytest.mark.slow]

VEHICLES = 1000
PER_VEHICLE = 50
TOTAL = VEHICLES * PER_VEHICLE
T0 = int(time.time() * 1000) - 2 * 86_400_000  # two days ago: inside the accepted window


def write_config(
    tmp_path: Path, port: int, web_port: int, schema: str, unique: str, client: str
) -> Path:
    doc = {
        "mqtt": {
            "port": port,
            "client_id": f"fw-noloss-{unique}",
            "ack": "after_store",
            "protocol": "5",
            "persistent_session": True,
            "client": client,
        },
        "store": {
            "kind": "postgres",
            "postgres_schema": schema,
            "spool_dir": str(tmp_path / "spool"),
        },
        "web": {"port": web_port},
        "orgs": [{"id": "c", "name": "City"}],
        "vehicles": [
            {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": f"139{i:08d}", "org": "c"}
            for i in range(VEHICLES)
        ],
    }
    path = tmp_path / "fleet.toml"
    path.write_text(dumps(doc), encoding="utf-8")
    return path


def serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "fleetwatch.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def health(web_port: int) -> dict[str, object] | None:
    try:
        return httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=1).json()
    except (httpx.HTTPError, ValueError):
        return None


def wait_connected(web_port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        h = health(web_port)
        if h and h.get("mqtt") == "connected":
            return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"service did not connect: {health(web_port)} " + log.read_text()[-3000:])


def publish_all(port: int, done: threading.Event) -> None:
    connected = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fw-noloss-pub")
    client.on_connect = lambda *a: connected.set()
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert connected.wait(10)
    window: list[paho.MQTTMessageInfo] = []
    for k in range(PER_VEHICLE):
        for v in range(VEHICLES):
            body = b'{"ts": %d, "lat": 30.4, "lon": 106.6, "speed": 30}' % (T0 + k * 10_000)
            window.append(client.publish(f"fleet/139{v:08d}/position", body, qos=1))
        for info in window:  # at most one round of 1,000 outstanding
            info.wait_for_publish(60)
        window.clear()
    client.loop_stop()
    client.disconnect()
    done.set()


def stored(schema: str) -> tuple[int, int]:
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test") as conn:
        row = conn.execute(
            f"SELECT count(*), count(DISTINCT (vehicle, ts)) FROM {schema}.positions"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# The default client and the built-in one; gmqtt and paho pass the same test
# (FW_NOLOSS_ALL_CLIENTS=1) and are measured at this configuration by `fleetwatch bench e2e`.
CLIENTS = (
    ["aiomqtt", "gmqtt", "paho", "fast"]
    if os.environ.get("FW_NOLOSS_ALL_CLIENTS")
    else [
        "aiomqtt",
        "fast",
    ]
)


@pytest.mark.parametrize("client", CLIENTS)
def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(
    broker: Broker, postgres: tuple[str, int], tmp_path: Path, unique: str, client: str
) -> None:
    schema = f"noloss_{unique}"
    web_port = free_port()
    config = write_config(tmp_path, broker.port, web_port, schema, unique, client)
    log = tmp_path / "serve.log"
    proc = serve(config, log)
    try:
        wait_connected(web_port, proc, log)
        done = threading.Event()
        publisher = threading.Thread(target=publish_all, args=(broker.port, done), daemon=True)
        publisher.start()
        # Kill once a good part, but not all, has been stored.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            h = health(web_port) or {}
            if int(h.get("positions_stored", 0) or 0) >= 15_000:  # type: ignore[call-overload]
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed_at = stored(schema)[0]
        assert 0 < killed_at < TOTAL, killed_at
        publisher.join(120)
        assert done.is_set(), "publisher did not finish"

        proc = serve(config, log)  # same client id: the broker resumes the session
        wait_connected(web_port, proc, log)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and stored(schema)[0] < TOTAL:
            time.sleep(0.5)
        rows, distinct = stored(schema)
        assert (rows, distinct) == (TOTAL, TOTAL), (rows, distinct, killed_at)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
