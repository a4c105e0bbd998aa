"""``fleetwatch bench cluster --json [--quick]``: throughput with 1, 2 and 4 engine nodes.

The no-loss configuration (QoS 1, PUBACK after the durable write, a persistent session per
partition) through one Mosquitto of the local cluster's own, history in the shared
PostgreSQL (a schema per run), live state in the shared Redis (a key prefix per run). For
each node count a fresh deployment: the engines start, every partition gets its owner, then
a paho publisher (its own process, so it does not share the GIL with the measurement) sends
``messages`` single-position messages of distinct (vehicle, ts) as fast as the broker takes
them, and the figure is messages / seconds from the first publish until PostgreSQL holds
them all. The ratio per added node is rate(n) / rate(1) / n.

On a machine with fewer cores than engine nodes the nodes share cores: the ratio then says
what one machine gives, not what n machines would.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from fleet.cluster import partition_of, partition_topic
from fleetwatch.localcluster import Layout, LocalCluster
from fleetwatch.localcluster.harness import Nodes
from fleetwatch.localcluster.proc import ClusterError, wait_until
from simulator.fleet import FleetSpec, terminal_id

__all__ = ["run"]

SHARED_PG = "postgresql://postgres@127.0.0.1:5432/test"
PARTITIONS = 8
NODE_COUNTS = (1, 2, 4)
STORE_TIMEOUT_S = 180.0
CHUNK = 30_000  # messages in flight (queued or unacknowledged) at most, below 65,535 ids


def _publish(port: int, vehicles: int, messages: int, client_id: str, t0_ms: int) -> None:
    """Send ``messages`` positions (QoS 1) round-robin over the vehicles; wait every PUBACK."""
    import paho.mqtt.client as paho

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_inflight_messages_set(5000)
    c.max_queued_messages_set(0)  # unbounded: every message is queued until sent
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    terminals = [terminal_id(v) for v in range(vehicles)]
    topics = [
        partition_topic(f"fleet/{t}/position", partition_of(t, PARTITIONS), PARTITIONS)
        for t in terminals
    ]
    infos = []
    for i in range(messages):
        v = i % vehicles
        ts = t0_ms + (i // vehicles) * 1000
        body = b'{"ts":%d,"lat":30.%06d,"lon":106.6,"speed":40.0,"heading":90}' % (ts, i % 999999)
        infos.append(c.publish(topics[v], body, qos=1))
        if len(infos) >= CHUNK:  # MQTT packet ids wrap at 65,535: never that many unacked
            for info in infos:
                info.wait_for_publish(120)
            infos.clear()
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


def _count(schema: str) -> int:
    import psycopg

    try:
        with psycopg.connect(SHARED_PG, connect_timeout=3) as conn:
            row = conn.execute(f"SELECT count(*) FROM {schema}.positions").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


def _one(infra: LocalCluster, engines: int, vehicles: int, messages: int) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:6]
    spec = FleetSpec(vehicles=vehicles, seed=7)
    nodes = Nodes(
        infra, spec, partitions=PARTITIONS, schema=f"fo_tp_{unique}", unique=unique,
        broker="mosquitto", redis_url="redis://127.0.0.1:6379/0", postgres_dsn=SHARED_PG,
    )  # fmt: skip
    try:
        nodes.start_engine(0).wait_ready()
        for i in range(1, engines):
            nodes.start_engine(i)
        for p in nodes.engines.values():
            p.wait_ready()
        nodes.wait_all_owned(60)
        if engines > 1:
            fair = -(-PARTITIONS // engines)
            wait_until(
                lambda: all(0 < len(v) <= fair for v in nodes.owned().values()),
                60,
                "partitions spread over the engines",
            )
        t0_ms = int(time.time() * 1000) - 3_600_000
        proc = mp.get_context("spawn").Process(
            target=_publish,
            args=(infra.layout.mosquitto, vehicles, messages, f"fw-tp-{unique}", t0_ms),
        )
        t0 = time.monotonic()
        proc.start()
        wait_until(lambda: _count(nodes.schema) >= messages, STORE_TIMEOUT_S, "all stored", 0.25)
        seconds = time.monotonic() - t0
        proc.join(30)
        return {
            "engines": engines,
            "messages": messages,
            "seconds": round(seconds, 2),
            "msg_per_s": round(messages / seconds, 1),
            "stored": _count(nodes.schema),
        }
    finally:
        for p in nodes.engines.values():
            p.kill9()
            infra.procs.pop(p.name, None)
        import psycopg

        with contextlib.suppress(psycopg.Error), psycopg.connect(SHARED_PG, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {nodes.schema} CASCADE")


def run(quick: bool = False, root: Path | None = None, base: int = 20100) -> dict[str, Any]:
    vehicles = 500 if quick else 2000
    messages = 20_000 if quick else 100_000
    repeats = 1 if quick else 3
    root = root or Path("var") / f"bench-cluster-{int(time.time())}"
    infra = LocalCluster(root.resolve(), Layout(base))
    out: dict[str, Any] = {
        "quick": quick,
        "cores": os.cpu_count(),
        "partitions": PARTITIONS,
        "config": "QoS 1, ack after_store, persistent session per partition, aiomqtt, Mosquitto",
        "vehicles": vehicles,
        "messages": messages,
        "repeats": repeats,
    }
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in NODE_COUNTS}
    try:
        infra.up(("etcd", "mosquitto"))
        for _ in range(repeats):
            for n in NODE_COUNTS:
                try:
                    runs[n].append(_one(infra, n, vehicles, messages))
                except ClusterError as e:
                    runs[n].append({"engines": n, "error": str(e)[:2000]})
    finally:
        infra.down(graceful=False)
    medians: dict[str, float] = {}
    for n, rs in runs.items():
        rates = [r["msg_per_s"] for r in rs if "msg_per_s" in r]
        if rates:
            medians[str(n)] = round(statistics.median(rates), 1)
    out["runs"] = runs
    out["median_msg_per_s"] = medians
    one = medians.get("1")
    if one:
        out["speedup"] = {n: round(v / one, 2) for n, v in medians.items()}
        out["ratio_per_node"] = {n: round(v / one / int(n), 2) for n, v in medians.items()}
    return out
