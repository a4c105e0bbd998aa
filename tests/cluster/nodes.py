"""Helpers of the cluster tests: a cluster configuration, engine and web node processes,
a partitioned publisher, and what history holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import psycopg

from fleet.cluster import partition_of, partition_topic
from simulator.toml import dumps

PG = "postgresql://postgres@127.0.0.1:5432/test"


def terminal(i: int) -> str:
    return f"139{i:08d}"


def write_config(
    tmp_path: Path,
    *,
    unique: str,
    mqtt_port: int,
    etcd_url: str,
    schema: str,
    vehicles: int,
    partitions: int = 2,
    web_port: int = 0,
) -> Path:
    doc: dict[str, Any] = {
        "mqtt": {
            "port": mqtt_port,
            "client_id": f"fw-eng-{unique}",
            "ack": "after_store",
            "protocol": "5",
            "persistent_session": True,
        },
        "store": {
            "kind": "postgres",
            "postgres_schema": schema,
            "spool_dir": str(tmp_path / "spool"),
        },
        "live": {"kind": "redis", "key_prefix": f"fwc{unique}:"},
        "cluster": {
            "partitions": partitions,
            "etcd": [etcd_url],
            "prefix": f"/fw-{unique}",
            "lease_ttl_s": 4,
            "renew_every_s": 0.5,
            "step_down_margin_s": 1.5,
        },
        "web": {"port": web_port},
        "orgs": [{"id": "c", "name": "City"}],
        "vehicles": [
            {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": terminal(i), "org": "c"}
            for i in range(vehicles)
        ],
    }
    path = tmp_path / "cluster.toml"
    path.write_text(dumps(doc), encoding="utf-8")
    return path


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fleetwatch.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def engine(config: Path, node: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return spawn(["engine", "--config", str(config), "--node", node, "--http-port", str(port)], log)


def health(port: int, path: str = "/health") -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).json())
    except (httpx.HTTPError, ValueError):
        return {}


def wait_for(what: str, check: Any, timeout: float, logs: list[Path]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


class Publisher(threading.Thread):
    """Every vehicle's position each ``every_s``, QoS 1, on its partition's topic;
    vehicle 0 drives at 150 km/h (a speeding episode stays open), the others at 30."""

    def __init__(
        self, port: int, vehicles: int, rounds: int, partitions: int, t0: int, every_s: float
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.vehicles, self.rounds = port, vehicles, rounds
        self.partitions, self.t0, self.every_s = partitions, t0, every_s
        self.sent = 0
        self.done = threading.Event()

    def run(self) -> None:
        connected = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{os.getpid()}")
        c.on_connect = lambda *a: connected.set()
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        assert connected.wait(10)
        infos = []
        start = time.monotonic()
        for r in range(self.rounds):
            for v in range(self.vehicles):
                t = terminal(v)
                speed = 150 if v == 0 else 30
                body = b'{"ts": %d, "lat": %.6f, "lon": 106.6, "speed": %d}' % (
                    self.t0 + r * 10_000,
                    30.4 + r * 1e-4,
                    speed,
                )
                k = partition_of(t, self.partitions)
                topic = partition_topic(f"fleet/{t}/position", k, self.partitions)
                infos.append(c.publish(topic, body, qos=1))
                self.sent += 1
            for info in infos:
                info.wait_for_publish(30)
            infos.clear()
            delay = start + (r + 1) * self.every_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        c.loop_stop()
        c.disconnect()
        self.done.set()


def stored(schema: str) -> tuple[int, int]:
    with psycopg.connect(PG) as conn:
        row = conn.execute(
            f"SELECT count(*), count(DISTINCT (vehicle, ts)) FROM {schema}.positions"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def episodes(schema: str) -> list[tuple[str, str, str, str]]:
    """(id, vehicle_id, kind, state) of every episode."""
    with psycopg.connect(PG) as conn:
        try:
            rows = conn.execute(
                f"SELECT id, vehicle_id, kind, state FROM {schema}.alarms ORDER BY id"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None
    return proc.returncode
