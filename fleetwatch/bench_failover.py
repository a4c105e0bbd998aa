"""``fleetwatch bench failover --json [--quick] [--faults a,b]``: kill the cluster's parts
under load and count what was lost (issue 19).

One infrastructure (fleetwatch.localcluster: etcd, Redis + Sentinel, a Patroni pair, three
NATS nodes, Mosquitto, haproxy) serves every fault; each fault gets a fresh FleetWatch
deployment on it — its own PostgreSQL schema, etcd prefix, Redis key prefix and MQTT client
ids — with two engine nodes, two web nodes behind haproxy, a page on /ws/live through haproxy
and the simulated city at the target rate. The fault comes a third of the way into the load;
after the load the harness waits for history to drain and counts, from PostgreSQL and from
the page's log:

- ``positions_lost``: published with a PUBACK, not in history (must be 0)
- ``positions_stored_twice``: rows beyond one per (vehicle, ts) (must be 0)
- ``episodes_opened_twice``: episodes of one (vehicle, kind) overlapping in time (must be 0)
- ``alarms_never_on_page``: episodes in history the page never received (must be 0)
- ``live_again_s``: from the fault to the page's first position, of a vehicle the fault
  touched, that was published after the fault (goal ≤ 10 s)

Broker: the faults other than ``nats_node`` load through Mosquitto at the full rate; the
NATS cluster (MQTT QoS 1 on JetStream, three replicas) takes about 2,000 QoS 1 publishes/s
on this two-core machine with nothing else running, so ``nats_node`` runs at ``nats_rate``
(printed) — that limit is NATS's, measured in the same run (``nats_qos1_publish_per_s``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import statistics
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fleet.cluster import partition_of
from fleetwatch.localcluster import Layout, LocalCluster
from fleetwatch.localcluster.harness import LoadPublisher, Nodes, PageClient, truth
from fleetwatch.localcluster.proc import ClusterError, wait_until
from simulator.fleet import FleetSpec, terminal_id, vehicle_id

__all__ = ["FAULTS", "run", "run_fault"]

FAULTS = (
    "engine_kill",
    "web_kill",
    "pg_primary",
    "redis_master",
    "nats_node",
    "engine_partition",
)
PARTITIONS = 4
DRAIN_S = 45.0  # after the load: history must hold every acknowledged position by then
LIVE_GOAL_S = 10.0
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _profile(quick: bool) -> dict[str, Any]:
    if quick:
        return {"vehicles": 400, "rate": 600.0, "nats_rate": 400.0, "warm_s": 8.0, "after_s": 22.0}
    return {"vehicles": 2000, "rate": 2000.0, "nats_rate": 1000.0, "warm_s": 10.0, "after_s": 35.0}


def _sentinel_supported() -> bool:
    try:
        import store.redisconn  # noqa: F401 — the feed slice's Sentinel URLs
    except ImportError:
        return False
    return True


def _log_times(path: Path, pattern: str) -> list[float]:
    """Wall times (epoch s) of the log lines matching ``pattern`` (the nodes log local time)."""
    out = []
    rx = re.compile(pattern)
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            m = LOG_TS.match(line)
            if m and rx.search(line):
                t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                out.append(t.timestamp())
    return out


def _web_with_page(nodes: Nodes) -> int | None:
    """The web node holding the page's websocket (an established connection on its port)."""
    for i, p in nodes.webs.items():
        if not p.alive():
            continue
        port = nodes.cluster.layout.web_http(i)
        r = subprocess.run(
            ["/usr/bin/ss", "-Htn", "state", "established", "sport", "=", f":{port}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if r.stdout.strip():
            return i
    return None


def _stored_count(dsn: str, schema: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(f"SELECT count(*) FROM {schema}.positions").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return -1


def _inject(fault: str, infra: LocalCluster, nodes: Nodes, spec: FleetSpec) -> dict[str, Any]:
    """Do the fault; return what was killed and which vehicles it touched."""
    all_vehicles = {vehicle_id(i) for i in range(spec.vehicles)}
    if fault in ("engine_kill", "engine_partition"):
        victim = 0
        owned = nodes.engine_health(victim).get("owned", [])
        touched = {
            vehicle_id(i)
            for i in range(spec.vehicles)
            if partition_of(terminal_id(i), PARTITIONS) in owned
        }
        watch = None
        if fault == "engine_kill":
            nodes.engines[victim].kill9()
        else:
            infra.cut(victim)
            watch = _FenceWatch(nodes, list(owned), 40.0)
            watch.start()
        return {
            "victim": f"engine{victim}",
            "partitions": owned,
            "touched": touched,
            "watch": watch,
        }
    if fault == "web_kill":
        w = _web_with_page(nodes)
        if w is None:
            raise ClusterError("no web node holds the page's socket")
        nodes.webs[w].kill9()
        return {"victim": f"web{w}", "touched": all_vehicles}
    if fault == "pg_primary":
        primary = infra.pg_primary()
        if primary is None:
            raise ClusterError("no PostgreSQL primary to kill")
        infra.kill_pg_node(primary)
        return {"victim": f"pg{primary}", "touched": all_vehicles}
    if fault == "redis_master":
        port = infra.redis_master_port()
        name = "redis-master" if port == infra.layout.redis_master else "redis-replica"
        infra.procs[name].kill9()
        return {"victim": name, "touched": all_vehicles}
    if fault == "nats_node":
        # the node carrying most of the engines' sessions: the one haproxy gave the first
        infra.procs["nats0"].kill9()
        return {"victim": "nats0", "touched": all_vehicles}
    raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")


def _restore(fault: str, infra: LocalCluster, victim: str) -> dict[str, Any]:
    """Bring the infrastructure back for the next fault; how long it took."""
    t0 = time.monotonic()
    if fault == "pg_primary":
        i = int(victim.removeprefix("pg"))
        infra.restart_pg_node(i)
        wait_until(infra.pg_pair_ready, 120, "the killed PostgreSQL node rejoins")
    elif fault == "redis_master":
        p = infra.procs[victim]
        p.start()
        wait_until(lambda: infra.redis_master_port() is not None and p.alive(), 30, "Redis back")
    elif fault == "nats_node":
        infra.procs[victim].start()
        infra.procs[victim].wait_ready()
    return {"restore_s": round(time.monotonic() - t0, 2)}


def _netns_owned(nodes: Nodes, i: int) -> list[int] | None:
    """Engine ``i``'s owned partitions asked from inside its namespace (its link is down)."""
    import json as _json

    p = nodes.engines[i]
    if p.netns is None:
        return None
    port = nodes.cluster.layout.engine_http(i)
    r = subprocess.run(
        ["/usr/sbin/ip", "netns", "exec", p.netns, "/usr/bin/curl", "-s", "-m", "0.5",
         f"http://127.0.0.1:{port}/health"],
        capture_output=True, text=True, check=False, timeout=3,
    )  # fmt: skip
    try:
        return list(_json.loads(r.stdout).get("owned", []))
    except ValueError:
        return None


class _FenceWatch(threading.Thread):
    """Polls, every 0.1 s, the cut-off owner (from inside its namespace) and the other engine:
    when the old owner stopped owning the partitions, when the new owner took them."""

    def __init__(self, nodes: Nodes, partitions: list[int], timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.nodes, self.partitions, self.timeout_s = nodes, set(partitions), timeout_s
        self.old_stopped: float | None = None
        self.new_took: float | None = None
        self.t0 = time.time()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and (self.old_stopped is None or self.new_took is None):
            if self.old_stopped is None:
                owned = _netns_owned(self.nodes, 0)
                if owned is not None and not (self.partitions & set(owned)):
                    self.old_stopped = time.time()
            if self.new_took is None:
                got = set(self.nodes.engine_health(1).get("owned", []))
                if self.partitions <= got:
                    self.new_took = time.time()
            time.sleep(0.1)

    def result(self) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return round(t - self.t0, 2) if t is not None else None

        first = (
            self.old_stopped is not None
            and self.new_took is not None
            and self.old_stopped <= self.new_took
        )
        return {
            "old_owner_stopped_after_cut_s": rel(self.old_stopped),
            "new_owner_took_after_cut_s": rel(self.new_took),
            "old_owner_stepped_down_first": first,
            "measured_by": "GET /health every 0.1 s, the old owner's from inside its namespace",
        }


def _step_down_order(nodes: Nodes, partitions: list[int]) -> dict[str, Any]:
    """From the nodes' logs: when the cut-off owner stopped consuming each partition and when
    the other engine took it. Fencing holds when every stop precedes the takeover."""
    logs = nodes.cluster.root / "logs"
    u = nodes.unique
    out: dict[str, Any] = {}
    ok = True
    for k in partitions:
        stops = _log_times(logs / f"{u}-engine0.log", rf"partition {k} stops")
        takes = _log_times(logs / f"{u}-engine1.log", rf"partition {k} owned")
        stop_t = stops[-1] if stops else None
        take_t = takes[-1] if takes else None
        before = stop_t is not None and take_t is not None and stop_t < take_t
        ok = ok and before
        out[str(k)] = {
            "old_owner_stopped_before_new_owner_s": (
                round(take_t - stop_t, 3) if stop_t is not None and take_t is not None else None
            )
        }
    out["old_owner_stepped_down_first"] = ok
    return out


def run_fault(infra: LocalCluster, fault: str, prof: dict[str, Any]) -> dict[str, Any]:
    """One fault on a fresh deployment (schema, prefixes) over ``infra``."""
    unique = uuid.uuid4().hex[:6]
    spec = FleetSpec(vehicles=int(prof["vehicles"]), seed=19)
    broker = "nats" if fault == "nats_node" else "mosquitto"
    rate = float(prof["nats_rate"] if broker == "nats" else prof["rate"])
    sentinel = _sentinel_supported()
    nodes = Nodes(
        infra,
        spec,
        partitions=PARTITIONS,
        schema=f"fo_{fault}_{unique}",
        unique=unique,
        broker=broker,
        redis_url=infra.sentinel_url() if sentinel else None,
    )
    res: dict[str, Any] = {"fault": fault, "broker": broker, "target_rate": rate}
    started: list[str] = []
    try:
        nodes.start_engine(0, netns=fault == "engine_partition").wait_ready()
        started.append("engine0")
        nodes.start_engine(1).wait_ready()
        for i in range(2):
            nodes.start_web(i)
        for p in nodes.webs.values():
            p.wait_ready()
        nodes.wait_all_owned()
        wait_until(lambda: all(len(v) > 0 for v in nodes.owned().values()), 30, "both engines own")
        page = PageClient(f"ws://127.0.0.1:{infra.web_port}/ws/live")
        page.start()
        wait_until(lambda: page.connects >= 1, 15, "the page connects")
        load = LoadPublisher(
            spec,
            nodes.mqtt_port,
            PARTITIONS,
            rate=rate,
            duration_s=float(prof["warm_s"]) + float(prof["after_s"]),
            client_id=f"fw-load-{unique}",
        )
        load.start()
        time.sleep(float(prof["warm_s"]))
        t_fault = time.time()
        injected = _inject(fault, infra, nodes, spec)
        res["victim"] = injected["victim"]
        load.join(float(prof["after_s"]) + 90)
        t_load_end = time.time()
        res["load"] = {
            "messages": load.sent_messages,
            "rate_msg_s": round(load.sent_messages / (t_load_end - (t_fault - prof["warm_s"])), 1),
            "acked_positions": len(load.acked),
            "publisher_reconnects": load.disconnects,
            "error": load.error,
        }
        if fault == "engine_partition":
            watch = injected["watch"]
            watch.join(45)
            res["fencing"] = watch.result()
            res["fencing_logs"] = _step_down_order(nodes, list(injected["partitions"]))
        target = len(load.acked)
        with contextlib.suppress(ClusterError):
            wait_until(
                lambda: _stored_count(infra.pg_dsn(), nodes.schema) >= target, DRAIN_S, "drain"
            )
        time.sleep(2.0)  # late duplicates would land now
        terminal_of = {vehicle_id(i): terminal_id(i) for i in range(spec.vehicles)}
        live = None
        lags = [
            arrived - pub
            for vehicle, ts, arrived in list(page.positions)
            if t_fault - 5.0 <= arrived < t_fault
            and (pub := load.published.get((terminal_of[vehicle], ts))) is not None
        ]
        res["page_lag_before_fault_s"] = round(statistics.median(lags), 2) if lags else None
        for vehicle, ts, arrived in list(page.positions):
            if arrived < t_fault or vehicle not in injected["touched"]:
                continue
            pub = load.published.get((terminal_of[vehicle], ts))
            if pub is not None and pub > t_fault:
                live = arrived - t_fault
                break
        res["live_again_s"] = round(live, 2) if live is not None else None
        page.stop()
        page.join(5)
        t = truth(infra.pg_dsn(), nodes.schema, spec, load.acked, page, 0)
        t["published_not_acked"] = len(load.published) - len(load.acked)
        res.update(t)
        if fault == "engine_partition":
            infra.heal(0)
        res.update(_restore(fault, infra, injected["victim"]))
        res["redis_sentinel_url"] = sentinel
        res["ok"] = bool(
            t["positions_lost"] == 0
            and t["positions_stored_twice"] == 0
            and t["episodes_opened_twice"] == 0
            and t.get("alarms_never_on_page", 0) == 0
            and live is not None
            and live <= LIVE_GOAL_S
            and (fault != "engine_partition" or res["fencing"]["old_owner_stepped_down_first"])
        )
    except ClusterError as e:
        res["error"] = str(e)[:3000]
        res["ok"] = False
    finally:
        for p in [*nodes.engines.values(), *nodes.webs.values()]:
            p.kill9()
            infra.procs.pop(p.name, None)
        for p in nodes.engines.values():
            if p.netns is not None:
                infra.remove_netns(p.netns)
        _drop_schema(infra.pg_dsn(), nodes.schema)
    return res


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run(
    quick: bool = False, faults: str | None = None, root: Path | None = None, base: int = 20000
) -> dict[str, Any]:
    """Bring the infrastructure up, run each fault, take it down; the figures as one dict."""
    names = [f.strip() for f in (faults or ",".join(FAULTS)).split(",") if f.strip()]
    unknown = [f for f in names if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    prof = _profile(quick)
    root = root or Path("var") / f"bench-failover-{int(time.time())}"
    infra = LocalCluster(root.resolve(), Layout(base), web_nodes=2)
    out: dict[str, Any] = {"quick": quick, "profile": prof, "partitions": PARTITIONS}
    t0 = time.monotonic()
    pieces: tuple[str, ...] = ("etcd", "redis", "patroni", "mosquitto", "nats", "haproxy")
    try:
        infra.up(pieces)
        out["startup_s"] = dict(infra.timings)
        out["faults"] = {name: run_fault(infra, name, prof) for name in names}
    finally:
        infra.down(graceful=False)
    out["seconds"] = round(time.monotonic() - t0, 1)
    out["all_ok"] = all(r.get("ok") for r in out.get("faults", {}).values())
    return out
