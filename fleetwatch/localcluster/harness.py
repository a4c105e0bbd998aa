"""The measurement harness of the failover bench: load, a page, FleetWatch nodes, the truth.

- :class:`LoadPublisher` — the simulated city (simulator.fleet) published at a target rate
  (2,000 msg/s in the bench) at QoS 1 on the partitions' topics, through haproxy to the NATS
  cluster; it records every (terminal, ts) it published and when, so that the truth is what
  was sent, not what the engine says it got.
- :class:`PageClient` — a websocket page on /ws/live through haproxy, in a thread of its own:
  it logs position frames (vehicle, ts, arrival time) and alarm frames, and when its socket
  closes it reconnects with ``last_seq`` (and, when the feed sends them, the last global
  alarm id ``gid`` and the node it came from), as the page does.
- :func:`truth` — from PostgreSQL: positions per (vehicle, ts) against what was published
  (lost, stored twice), episodes per (vehicle, kind) overlapping in time (opened twice), and
  the episodes that no page saw.
- :class:`Nodes` — ``fleetwatch engine`` and ``fleetwatch web`` processes (optionally inside
  a network namespace) with their configuration written from the cluster's addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho

from fleet import aio
from fleet.cluster import partition_of, partition_topic
from fleetwatch.localcluster.cluster import LocalCluster
from fleetwatch.localcluster.proc import ClusterError, Proc, http_json
from simulator.fleet import Fleet, FleetSpec, terminal_id, vehicle_id
from simulator.scenario import DEMO_TOKEN, fleet_config
from simulator.toml import dumps
from simulator.wire import json_messages

__all__ = ["LoadPublisher", "Nodes", "PageClient", "truth"]

TICK_S = 0.1  # the publisher steps the fleet this often (wall time)
OFFLINE_AFTER_S = 4 * 3600  # longer than any load's simulated span (see Nodes.config)
PAGE_RECONNECT_S = 0.2  # a page's first retry; doubles up to PAGE_RECONNECT_MAX_S
PAGE_RECONNECT_MAX_S = 2.0
KEEPALIVE_S = 15  # the publisher's MQTT keep-alive: a dead broker node is noticed within 1.5 ×
MAX_INFLIGHT = 2000  # publisher QoS 1 window (paho); more waits


# -- FleetWatch nodes ----------------------------------------------------------------------------


@dataclass
class Nodes:
    """Engine and web node processes of a FleetWatch cluster on ``cluster``'s infrastructure."""

    cluster: LocalCluster
    spec: FleetSpec
    partitions: int
    schema: str
    unique: str
    redis_url: str | None = None  # default: the cluster's Redis master, plain
    lease_ttl_s: int = 4
    broker: str = "nats"  # "nats": the NATS cluster through haproxy; "mosquitto": one broker
    postgres_dsn: str | None = None  # default: the Patroni pair, both hosts, read-write
    engines: dict[int, Proc] = field(default_factory=dict)
    webs: dict[int, Proc] = field(default_factory=dict)

    @property
    def mqtt_port(self) -> int:
        lay = self.cluster.layout
        return lay.mosquitto if self.broker == "mosquitto" else lay.haproxy_mqtt

    def config(
        self, host: str = "127.0.0.1", *, netns_index: int | None = None, node: str = "web"
    ) -> Path:
        """The node configuration, with every address seen from ``host`` (127.0.0.1 in the
        host's namespace, the veth address from inside a namespace)."""
        lay = self.cluster.layout
        doc = fleet_config(
            self.spec,
            mqtt_host=host,
            mqtt_port=self.mqtt_port,
            web_port=lay.haproxy_web,
            db_path=str(self.cluster.root / f"nodes/{self.unique}-{node}.db"),
            client_id=f"fw-{self.unique}",
        )
        doc["mqtt"].update(
            {"ack": "after_store", "persistent_session": True, "protocol": "3.1.1", "qos": 1}
        )
        # The load's simulated clock runs ~30x the wall clock and ends 2 min before now, so
        # its positions are up to half an hour old when they arrive; the offline rule (wall
        # clock) at 600 s flapped on every vehicle (1,029 of 1,034 episodes were offline).
        # An offline threshold beyond the load's span keeps the alarms those of a city.
        doc.setdefault("vehicle_state", {})["offline_after_s"] = OFFLINE_AFTER_S
        hosts = ",".join(f"{host}:{lay.pg(i)}" for i in range(self.cluster.pg_nodes))
        doc["store"] = {
            "kind": "postgres",
            "postgres_dsn": self.postgres_dsn
            or f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write",
            "postgres_schema": self.schema,
            # one spool per node: a spool is replayed by the node that wrote it
            "spool_dir": str(self.cluster.root / f"nodes/{self.unique}-{node}-spool"),
        }
        doc["live"] = {
            "kind": "redis",
            # inside a namespace the sentinels' answers (127.0.0.1) do not reach: plain URL
            "redis_url": (
                self.redis_url
                if self.redis_url and netns_index is None
                else f"redis://{host}:{self.cluster.redis_master_port() or lay.redis_master}/0"
            ),
            "key_prefix": f"fw{self.unique}:",
        }
        if netns_index is not None:  # /health must answer on the veth address
            doc.setdefault("web", {})["host"] = "0.0.0.0"
        ttl = self.lease_ttl_s
        doc["cluster"] = {
            "partitions": self.partitions,
            "etcd": [f"http://{host}:{lay.etcd_client}"],
            "prefix": f"/fw-{self.unique}",
            "lease_ttl_s": ttl,
            "renew_every_s": 0.5,
            "step_down_margin_s": 1.5,
        }
        path = self.cluster.root / f"nodes/{self.unique}-{node}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(doc), encoding="utf-8")
        return path

    def start_engine(self, i: int, *, netns: bool = False) -> Proc:
        lay = self.cluster.layout
        port = lay.engine_http(i)
        ns = None
        host = "127.0.0.1"
        if netns:
            ns = self.cluster.add_netns(i)
            host = lay.veth_host_ip(i)
        cfg = self.config(host, netns_index=i if netns else None, node=f"engine{i}")
        argv = [sys.executable, "-m", "fleetwatch.cli", "engine", "--config", str(cfg)]
        argv += ["--node", f"e{i}", "--http-port", str(port)]
        health = f"http://{lay.veth_node_ip(i) if netns else '127.0.0.1'}:{port}/health"

        def ready() -> bool:
            status, body = http_json(health)
            return status == 200 and isinstance(body, dict) and bool(body.get("ready"))

        p = Proc(
            f"engine{i}",
            argv,
            self.cluster.root / f"logs/{self.unique}-engine{i}.log",
            ready,
            60.0,
            env={"PYTHONUNBUFFERED": "1"},
            netns=ns,
        )
        self.cluster.add(p)
        self.engines[i] = p
        return p.start()

    def engine_health(self, i: int) -> dict[str, Any]:
        lay = self.cluster.layout
        host = lay.veth_node_ip(i) if self.engines[i].netns else "127.0.0.1"
        status, body = http_json(f"http://{host}:{lay.engine_http(i)}/health", 1.0)
        return body if status == 200 and isinstance(body, dict) else {}

    def owner_of(self, partition: int) -> int | None:
        for i, p in self.engines.items():
            if p.alive() and partition in self.engine_health(i).get("owned", []):
                return i
        return None

    def owned(self) -> dict[int, list[int]]:
        return {
            i: list(self.engine_health(i).get("owned", []))
            for i, p in self.engines.items()
            if p.alive()
        }

    def start_web(self, i: int) -> Proc:
        port = self.cluster.layout.web_http(i)
        cfg = self.config(node=f"web{i}")
        argv = [sys.executable, "-m", "fleetwatch.cli", "web", "--config", str(cfg)]
        argv += ["--port", str(port)]

        def ready() -> bool:
            status, _ = http_json(f"http://127.0.0.1:{port}/healthz")
            return status == 200

        p = Proc(
            f"web{i}",
            argv,
            self.cluster.root / f"logs/{self.unique}-web{i}.log",
            ready,
            60.0,
            env={"PYTHONUNBUFFERED": "1"},
        )
        self.cluster.add(p)
        self.webs[i] = p
        return p.start()

    def wait_all_owned(self, timeout_s: float = 60.0) -> dict[int, list[int]]:
        """Until every partition has exactly one owner among the live engines."""
        deadline = time.monotonic() + timeout_s
        owned: dict[int, list[int]] = {}
        while time.monotonic() < deadline:
            owned = self.owned()
            flat = sorted(k for ks in owned.values() for k in ks)
            if flat == list(range(self.partitions)):
                return owned
            time.sleep(0.2)
        tails = "\n".join(p.log_tail() for p in self.engines.values())
        raise ClusterError(f"partitions not all owned after {timeout_s:.0f} s: {owned}\n{tails}")


# -- load ------------------------------------------------------------------------------------


class LoadPublisher(threading.Thread):
    """The simulated fleet at ``rate`` msg/s (QoS 1) on partition topics, through ``port``.

    Simulated time runs ``speedup`` faster than the wall, chosen from a dry run of the same
    fleet so that its reports come at ``rate``; it starts far enough in the past that no
    position is ahead of the wall clock. ``published`` maps (terminal, ts) → wall time of the
    publish call; only messages whose PUBACK came are counted in ``acked``.
    """

    def __init__(
        self,
        spec: FleetSpec,
        port: int,
        partitions: int,
        *,
        rate: float,
        duration_s: float,
        host: str = "127.0.0.1",
        client_id: str = "fw-failover-load",
    ) -> None:
        super().__init__(daemon=True, name="load")
        self.spec, self.port, self.host, self.partitions = spec, port, host, partitions
        self.rate, self.duration_s, self.client_id = rate, duration_s, client_id
        self.published: dict[tuple[str, int], float] = {}
        self.mid_keys: dict[int, list[tuple[str, int]]] = {}
        self.acked: set[tuple[str, int]] = set()
        self.early_acks: set[int] = set()
        self.sent_messages = 0
        self.disconnects = 0
        self.disconnect_reasons: list[str] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.error: str | None = None
        self.speedup = self._calibrate()
        self.sim0 = int(time.time() * 1000) - int((duration_s * self.speedup + 120) * 1000)

    def _calibrate(self) -> float:
        """Messages per simulated second of this fleet (a dry run of 120 s), → speedup."""
        t0 = int(time.time() * 1000) - 3_600_000
        f = Fleet(self.spec, t0)
        n = 0
        for s in range(1, 121):
            n += len(json_messages(f.step(t0 + s * 1000)))
        per_sim_s = max(n / 120.0, 1e-6)
        return self.rate / per_sim_s

    def _on_publish(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self.lock:
            keys = self.mid_keys.pop(mid, None)
            if keys:
                self.acked.update(keys)
            else:  # PUBACK before the publishing thread noted the mid
                self.early_acks.add(mid)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.disconnects += 1
        self.disconnect_reasons.append(str(rc))

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()

    def _run(self) -> None:
        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.max_queued_messages_set(0)  # unbounded: paho keeps what it could not send yet
        c.reconnect_delay_set(1, 2)
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect
        c.connect(self.host, self.port, keepalive=KEEPALIVE_S)
        c.loop_start()
        fleet = Fleet(self.spec, self.sim0)
        wall0 = time.monotonic()
        k = 0
        try:
            while not self.stop_event.is_set():
                wall = time.monotonic() - wall0
                if wall >= self.duration_s:
                    break
                sim_now = self.sim0 + int(wall * self.speedup * 1000)
                for topic, body in json_messages(fleet.step(sim_now)):
                    terminal = topic.split("/")[1]
                    part = partition_of(terminal, self.partitions)
                    obj = orjson.loads(body)
                    rows = obj if isinstance(obj, list) else [obj]
                    keys = [(terminal, int(r["ts"])) for r in rows]
                    now = time.time()
                    # not under self.lock: paho calls on_publish holding its own lock
                    info = c.publish(partition_topic(topic, part, self.partitions), body, qos=1)
                    with self.lock:
                        for key in keys:
                            self.published[key] = now
                        if info.mid in self.early_acks:
                            self.early_acks.discard(info.mid)
                            self.acked.update(keys)
                        else:
                            self.mid_keys[info.mid] = keys
                    self.sent_messages += 1
                k += 1
                delay = wall0 + k * TICK_S - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)
            # wait (bounded) for the last PUBACKs
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with self.lock:
                    if not self.mid_keys:
                        break
                time.sleep(0.1)
        finally:
            c.disconnect()
            c.loop_stop()

    def stop(self) -> None:
        self.stop_event.set()


# -- the page ----------------------------------------------------------------------------------


class PageClient(threading.Thread):
    """A monitoring-room page on ``url`` (/ws/live through haproxy) that reconnects."""

    def __init__(self, url: str, token: str = DEMO_TOKEN) -> None:
        super().__init__(daemon=True, name="page")
        self.url, self.token = url, token
        self.positions: list[tuple[str, int, float]] = []  # (vehicle, ts, arrival wall time)
        self.alarm_states: dict[str, set[str]] = defaultdict(set)  # episode id → states seen
        self.alarm_frames = 0
        self.snapshots = 0
        self.connects = 0
        self.gaps = 0  # resumes the feed could not cover (it said so)
        self.last_seq: int | None = None
        self.last_gid: str | None = None
        self.node: str | None = None
        self.closed_at: list[float] = []
        self._halt = threading.Event()
        self.lock = threading.Lock()
        self.error: str | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def _resume_url(self) -> str:
        q = f"token={self.token}"
        if self.last_seq is not None:
            q += f"&last_seq={self.last_seq}"
        if self.last_gid is not None:
            q += f"&last_gid={self.last_gid}"
        if self.node is not None:
            q += f"&node={self.node}"
        return f"{self.url}?{q}"

    async def _main(self) -> None:
        import websockets

        delay = PAGE_RECONNECT_S
        while not self._halt.is_set():
            try:
                async with websockets.connect(
                    self._resume_url(),
                    open_timeout=3,
                    max_size=64 << 20,
                    ping_interval=2,
                    ping_timeout=3,
                ) as ws:
                    self.connects += 1
                    delay = PAGE_RECONNECT_S
                    while not self._halt.is_set():
                        try:
                            raw = await aio.wait_for(ws.recv(), 0.5)
                        except TimeoutError:
                            continue
                        self._frame(raw)
            except Exception:
                self.closed_at.append(time.time())
            if self._halt.is_set():
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, PAGE_RECONNECT_MAX_S)

    def _frame(self, raw: str | bytes) -> None:
        now = time.time()
        msg = orjson.loads(raw)
        kind = msg.get("type")
        with self.lock:
            if isinstance(msg.get("seq"), int):
                self.last_seq = msg["seq"]
            if isinstance(msg.get("node"), str):
                self.node = msg["node"]
            if kind == "positions":
                for it in msg.get("items", []):
                    self.positions.append((it["vehicle"], int(it["ts"]), now))
            elif kind == "snapshot":
                self.snapshots += 1
                if msg.get("gid") is not None:  # the feed's global alarm id at the snapshot
                    self.last_gid = str(msg["gid"])
                if msg.get("gap"):
                    self.gaps += 1
                for it in msg.get("vehicles", []):
                    if "ts" in it:
                        self.positions.append((it["vehicle"], int(it["ts"]), now))
                for a in msg.get("alarms", []):
                    self.alarm_states[a["id"]].add(a.get("state", "?"))
            elif kind == "alarm":
                self.alarm_frames += 1
                a = msg.get("alarm", {})
                self.alarm_states[a["id"]].add(a.get("state", "?"))
                gid = msg.get("gid", a.get("gid"))
                if gid is not None:
                    self.last_gid = str(gid)

    def first_position_published_after(
        self, t: float, published: dict[tuple[str, int], float], vehicle_terminal: dict[str, str]
    ) -> float | None:
        """Arrival time of the first position frame whose position was published after ``t``."""
        with self.lock:
            rows = list(self.positions)
        for vehicle, ts, arrived in rows:
            if arrived < t:
                continue
            term = vehicle_terminal.get(vehicle)
            pub = published.get((term, ts)) if term is not None else None
            if pub is not None and pub > t:
                return arrived
        return None


# -- the truth ---------------------------------------------------------------------------------


def truth(
    dsn: str,
    schema: str,
    spec: FleetSpec,
    published: set[tuple[str, int]],
    page: PageClient | None,
    since_ms: int,
) -> dict[str, Any]:
    """What PostgreSQL holds against what was published and what the page saw."""
    import psycopg

    terminal_of = {vehicle_id(i): terminal_id(i) for i in range(spec.vehicles)}
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        rows = conn.execute(
            f"SELECT v.id, (extract(epoch FROM p.ts) * 1000)::int8 FROM {schema}.positions p"
            f" JOIN {schema}.vehicles v ON v.key = p.vehicle"
        ).fetchall()
        eps = conn.execute(
            f"SELECT id, vehicle_id, kind, started_at, ended_at, state FROM {schema}.alarms"
        ).fetchall()
    stored: dict[tuple[str, int], int] = defaultdict(int)
    for v, ts in rows:
        stored[(terminal_of.get(str(v), str(v)), int(ts))] += 1
    lost = published - set(stored)
    twice = sum(n - 1 for n in stored.values() if n > 1)
    by_key: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for _id, vehicle, kind, started, ended, _state in eps:
        by_key[(vehicle, kind)].append((int(started), int(ended) if ended is not None else 2**62))
    overlapping = 0
    for spans in by_key.values():
        spans.sort()
        for (_s0, e0), (s1, _e1) in itertools.pairwise(spans):
            if s1 < e0:
                overlapping += 1
    out: dict[str, Any] = {
        "published_positions": len(published),
        "stored_rows": len(rows),
        "positions_lost": len(lost),
        "positions_stored_twice": twice,
        "episodes": len(eps),
        "episodes_opened_twice": overlapping,
        "backfill_episodes": sum(1 for e in eps if str(e[0]).endswith(":backfill")),
        "episodes_by_kind": dict(Counter(str(e[2]) for e in eps)),
    }
    if page is not None:
        recent = {str(e[0]) for e in eps if int(e[3]) >= since_ms}
        with page.lock:
            seen = set(page.alarm_states)
        out["alarms_in_db_since_page"] = len(recent)
        out["alarms_never_on_page"] = len(recent - seen)
        kind_of = {str(e[0]): str(e[2]) for e in eps}
        out["alarms_never_on_page_by_kind"] = dict(Counter(kind_of[i] for i in recent - seen))
        out["page_connects"] = page.connects
        out["page_alarm_frames"] = page.alarm_frames
        out["page_gap_flags"] = page.gaps
    return out


def save_json(path: Path, obj: Any) -> None:
    with contextlib.suppress(OSError):
        path.write_text(json.dumps(obj, indent=2, default=str))
