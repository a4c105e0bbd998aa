"""What holds when a piece of the infrastructure dies: measured, not assumed.

Each probe kills one piece of a running :class:`LocalCluster` with kill -9 and reports what a
client saw: PostgreSQL (Patroni failover: acknowledged commits kept, seconds without a primary),
Redis (Sentinel promotion: seconds until writes succeed, acknowledged writes kept), NATS (an
MQTT QoS 1 persistent session created on the killed node: queued messages delivered after a
reconnect to another node, messages in flight and unacknowledged redelivered). The bench and
tests/cluster/test_failover_infra.py print these dicts.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as paho

from fleetwatch.localcluster.cluster import LocalCluster
from fleetwatch.localcluster.proc import ClusterError, wait_until

__all__ = ["probe_nats_session", "probe_pg_failover", "probe_redis_failover"]


class _Sub:
    """A QoS 1 subscriber with a persistent session that acknowledges only when told."""

    def __init__(self, client_id: str, port: int) -> None:
        self.got: list[tuple[str, bytes, bool]] = []  # (topic, payload, dup)
        self.unacked: list[tuple[int, int]] = []  # (mid, qos)
        self.lock = threading.Lock()
        self.ack = True
        self.connected = threading.Event()
        self.session_present: bool | None = None
        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
            manual_ack=True,
        )
        c.on_message = self._on_message
        c.on_connect = self._on_connect
        self.c = c
        c.connect("127.0.0.1", port, keepalive=5)
        c.loop_start()
        if not self.connected.wait(10):
            raise ClusterError(f"MQTT subscriber could not connect to {port}")

    def _on_connect(self, c: paho.Client, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        self.connected.set()

    def _on_message(self, c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, bytes(msg.payload), bool(msg.dup)))
            if self.ack:
                c.ack(msg.mid, msg.qos)
            else:
                self.unacked.append((msg.mid, msg.qos))

    def close(self, *, clean: bool = True) -> None:
        if clean:
            self.c.disconnect()
        self.c.loop_stop()
        if not clean:
            # drop the socket without DISCONNECT, as a killed client would
            sock = self.c.socket()
            if sock is not None:
                sock.close()


def _publish(port: int, topic: str, n: int, tag: str) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"probe-pub-{tag}")
    c.connect("127.0.0.1", port, keepalive=10)
    c.loop_start()
    infos = [c.publish(topic, f"{tag}:{i}".encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def probe_nats_session(
    cluster: LocalCluster, n: int = 200, settle_s: float = 15.0
) -> dict[str, Any]:
    """Kill -9 the NATS node that holds an MQTT persistent session, reconnect elsewhere.

    Case ``queued``: the subscriber is offline while ``n`` QoS 1 messages are published (PUBACK
    received), then its node dies. Case ``inflight``: the subscriber is online, receives ``n``
    messages without acknowledging them, and its node dies under it. Both reconnect with the
    same client id to another node; the counts say what was delivered.
    """
    lay = cluster.layout
    tag = uuid.uuid4().hex[:6]
    victim, other, third = 0, 1, 2 % cluster.nats_nodes
    topic_q, topic_f = f"probe/{tag}/q", f"probe/{tag}/f"
    out: dict[str, Any] = {"messages": n, "ack_wait_s": 5}

    sub_q = _Sub(f"probe-q-{tag}", lay.nats_mqtt(victim))
    sub_q.c.subscribe(topic_q, qos=1)
    time.sleep(0.5)
    sub_q.close(clean=True)
    sub_f = _Sub(f"probe-f-{tag}", lay.nats_mqtt(victim))
    sub_f.ack = False
    sub_f.c.subscribe(topic_f, qos=1)
    time.sleep(0.5)
    _publish(lay.nats_mqtt(other), topic_q, n, "q")
    _publish(lay.nats_mqtt(other), topic_f, n, "f")
    wait_until(lambda: len(sub_f.got) >= n, 20, "in-flight messages reached the subscriber")
    out["inflight_received_before_kill"] = len(sub_f.got)

    t_kill = time.monotonic()
    cluster.procs[f"nats{victim}"].kill9()
    sub_f.close(clean=False)

    results: dict[str, dict[str, Any]] = {}
    for case, cid, topic in (
        ("queued", f"probe-q-{tag}", topic_q),
        ("inflight", f"probe-f-{tag}", topic_f),
    ):
        t0 = time.monotonic()
        sub = None
        deadline = t0 + settle_s
        while sub is None and time.monotonic() < deadline:
            try:
                sub = _Sub(cid, lay.nats_mqtt(third if case == "queued" else other))
            except (ClusterError, OSError):
                time.sleep(0.5)
        if sub is None:
            results[case] = {"error": "could not reconnect"}
            continue
        prefix = "q" if case == "queued" else "f"
        expect = {f"{prefix}:{i}".encode() for i in range(n)}
        with_deadline = time.monotonic() + settle_s
        while time.monotonic() < with_deadline:
            with sub.lock:
                if expect <= {p for _, p, _ in sub.got}:
                    break
            time.sleep(0.2)
        t_all = time.monotonic() - t0
        time.sleep(1.0)  # late duplicates
        with sub.lock:
            payloads = [p for t, p, _ in sub.got if t == topic]
            dups = sum(1 for t, _, d in sub.got if t == topic and d)
        results[case] = {
            "session_present": sub.session_present,
            "delivered_distinct": len(set(payloads) & expect),
            "lost": len(expect - set(payloads)),
            "delivered_twice": len(payloads) - len(set(payloads)),
            "dup_flag": dups,
            "seconds_to_all": round(t_all, 2),
        }
        sub.close()
    out.update(results)
    out["seconds_since_kill"] = round(time.monotonic() - t_kill, 2)
    cluster.procs[f"nats{victim}"].start()
    cluster.procs[f"nats{victim}"].wait_ready()
    return out


def probe_pg_failover(cluster: LocalCluster, rows: int = 400) -> dict[str, Any]:
    """Write rows one commit each through the two-host DSN while the primary is killed -9.

    Reports the seconds without a writable primary, the rows acknowledged (commit returned),
    and how many of them the new primary has (synchronous mode: it must have all).
    """
    import psycopg

    dsn = cluster.pg_dsn()
    table = f"probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f"CREATE TABLE {table} (i int PRIMARY KEY)")
    old = cluster.pg_primary()
    if old is None:
        raise ClusterError("no PostgreSQL primary before the probe")
    acked: set[int] = set()
    outage_start: float | None = None
    outage_s = 0.0
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
    killed_at = None
    i = 0
    deadline = time.monotonic() + 90
    while i < rows and time.monotonic() < deadline:
        if i == rows // 4 and killed_at is None:
            cluster.kill_pg_node(old)
            killed_at = time.monotonic()
        try:
            conn.execute(f"INSERT INTO {table} VALUES (%s)", (i,))
            acked.add(i)
            if outage_start is not None:
                outage_s = time.monotonic() - outage_start
                outage_start = None
            i += 1
        except psycopg.Error:
            if outage_start is None:
                outage_start = time.monotonic()
            conn.close()
            time.sleep(0.2)
            with contextlib.suppress(psycopg.Error):
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
            # the row whose commit failed may or may not exist: it was never acknowledged
            i += 1
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as c2:
        have = {r[0] for r in c2.execute(f"SELECT i FROM {table}")}
        c2.execute(f"DROP TABLE {table}")
    conn.close()
    new = cluster.pg_primary()
    cluster.restart_pg_node(old)
    rejoin = wait_until(cluster.pg_pair_ready, 90, "killed PostgreSQL node rejoins as standby")
    return {
        "old_primary": f"pg{old}",
        "new_primary": f"pg{new}" if new is not None else None,
        "rows_acknowledged": len(acked),
        "acknowledged_lost": len(acked - have),
        "seconds_without_primary": round(outage_s, 2),
        "seconds_old_node_rejoins": round(rejoin, 2),
    }


def probe_redis_failover(cluster: LocalCluster, writes: int = 300) -> dict[str, Any]:
    """Kill -9 the Redis master under writes (XADD, each followed by WAIT 1 replica).

    Reports the seconds until Sentinel's new master takes writes, and how many acknowledged
    entries (WAIT answered ≥ 1) the new master still has.
    """
    import redis
    from redis.sentinel import Sentinel

    sentinel = Sentinel(
        [("127.0.0.1", cluster.layout.sentinel(i)) for i in range(3)], socket_timeout=0.5
    )
    key = f"probe:{uuid.uuid4().hex[:8]}"
    old = cluster.redis_master_port()
    accepted: set[str] = set()
    replicated: set[str] = set()
    killed_at: float | None = None
    first_after_kill: float | None = None
    i = 0
    deadline = time.monotonic() + 60
    while i < writes and time.monotonic() < deadline:
        if i == writes // 4 and killed_at is None:
            name = "redis-master" if old == cluster.layout.redis_master else "redis-replica"
            cluster.procs[name].kill9()
            killed_at = time.monotonic()
        try:
            m = sentinel.master_for("fleetwatch", socket_timeout=0.5)
            m.xadd(key, {"i": i})
            accepted.add(str(i))
            if killed_at is not None and first_after_kill is None:
                first_after_kill = time.monotonic() - killed_at
            if int(m.execute_command("WAIT", 1, 100)) >= 1:
                replicated.add(str(i))
        except (redis.RedisError, OSError):
            time.sleep(0.2)
        i += 1
    m = sentinel.master_for("fleetwatch", socket_timeout=1)
    have = {fields[b"i"].decode() for _, fields in m.xrange(key)}
    m.delete(key)
    return {
        "old_master_port": old,
        "new_master_port": cluster.redis_master_port(),
        "writes_accepted": len(accepted),
        "accepted_and_replicated_wait_1": len(replicated),
        "replicated_lost": len(replicated - have),
        "accepted_lost": len(accepted - have),
        "seconds_until_writes_after_kill": (
            round(first_after_kill, 2) if first_after_kill is not None else None
        ),
    }
