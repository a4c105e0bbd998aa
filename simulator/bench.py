"""``fleetwatch bench e2e``: the whole service under a rising load, per MQTT client and mode.

One run, on this machine, nothing shared with other tests:

1. A Mosquitto of our own (``mosquitto -c FILE``, on ``broker_port`` or a free
   port), configured to queue without limit, so a loss is FleetWatch's and is
   counted. Two publisher processes (:mod:`simulator.bench_pub`: pre-built MQTT
   packets, one JSON position per message, ``ts`` = the wall clock at publish)
   that also raise an SOS bit now and then, each on a vehicle not yet in alarm,
   so alarm latency is measured too.
2. The baseline, per mode, before any service starts: how fast
   ``mosquitto_sub`` alone receives the same stream from the same publishers.
3. For every repeat, mode and client: ``fleetwatch serve --config generated.toml``
   as a child process — one engine node — (MQTT 5, ``mqtt.client`` = the client,
   PostgreSQL history in a private schema dropped afterwards; SQLite when no
   PostgreSQL answers; memory live state; the simulated city's fences and
   rules) and websocket clients on ``/ws/live``. Modes (:data:`MODES`):
   ``no_loss`` — the configuration people run and the headline: messages
   published at QoS 1, subscribed at QoS 1, PUBACK only after the durable
   write, a persistent session; ``qos0`` — QoS 0, acknowledgement on receipt,
   no session kept (the old headline).
4. Rates ramp up (coarse 10k steps, a failing one run twice, then two
   bisections); at each rate: messages sent, positions the service processed
   (``/healthz``), whether every vehicle's last position reached the feed and
   every SOS its alarm frame, p50/p99 publish-to-feed latency of positions and
   alarms, CPU per process (and what the rest of the machine used). The highest
   rate with nothing lost (at QoS 1: nothing late after the settle time) and
   p99 under 1 s is that run's figure; per core = 1e6 / the service's CPU µs
   per message at that rate. A last step at half that rate gives alarm latency.
5. :func:`summarize`: medians of the repeats, each client's ratio to the
   built-in ``fast`` client taken inside each repeat (the same minutes on the
   same machine), and the decision: keep the hand-written client only if no
   maintained library (aiomqtt, gmqtt, paho) reaches 75 % of it at ``no_loss``.

The JSON goes to stdout (``--json``) and, with the PNG plot of latency
against load, under ``artifacts/``. ``profile=True`` samples every service
with py-spy for its whole ramp (``bench_e2e_profile_*.txt``, collapsed stacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import websockets

from fleet import aio
from simulator.bench_pub import position_body, publisher_main

__all__ = ["run"]

TOKEN = "bench-token-0123456789"
N_VEHICLES = 2000
WS_CLIENTS = 4
N_PUBLISHERS = 2
ALARMS_PER_S = 20.0  # SOS messages per second, each from a vehicle not in alarm
SETTLE_S = 15.0  # how long a step may take to drain after the publishers stop
LATENCY_OK_MS = 1000.0
BACKLOG_DRAIN_S = 60.0  # QoS 1: how long a failed step's broker backlog may take to drain
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = port or _free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 10000000\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
        "log_dest none\n"
    )
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)])
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


# -- the websocket clients --------------------------------------------------------------------


class _FeedStats:
    def __init__(self) -> None:
        self.pos_lat: list[float] = []
        self.alarm_lat: list[float] = []
        self.last_ts: dict[str, int] = {}
        self.alarm_vehicles: set[str] = set()

    def reset(self) -> None:
        self.pos_lat, self.alarm_lat, self.alarm_vehicles = [], [], set()


async def _ws_client(url: str, stats: _FeedStats, record: bool) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
            if not record:
                continue  # the other clients load the server, not this process
            now = time.time() * 1000
            f = orjson.loads(raw)
            typ = f.get("type")
            if typ == "positions" and record:
                for it in f["items"]:
                    stats.pos_lat.append(now - it["ts"])
                    stats.last_ts[it["vehicle"]] = it["ts"]
            elif typ == "alarm" and record:
                a = f["alarm"]
                if a["state"] == "open" and a["kind"] == "terminal_alarm":
                    stats.alarm_vehicles.add(a["vehicle"])
                    stats.alarm_lat.append(now - a["started_at"])


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU seconds so far of each process, of the database servers, and of the whole machine."""
    t = psutil.cpu_times()
    out = {"machine (all cores)": t.user + t.system + t.nice + t.irq + t.softirq + t.steal}
    for name, p in procs.items():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[name] = t.user + t.system
    servers = {"postgres": "postgresql (all backends)", "redis-server": "redis (whole server)"}
    for p in psutil.process_iter(["name", "cpu_times"]):
        label = servers.get(p.info["name"] or "")
        if label is None and (p.info["name"] or "").startswith("postgres"):
            label = servers["postgres"]
        if label is not None and p.info["cpu_times"] is not None:
            t = p.info["cpu_times"]
            out[label] = out.get(label, 0.0) + t.user + t.system
    return out


def _percent(cpu0: dict[str, float], cpu1: dict[str, float], wall: float) -> dict[str, float]:
    """CPU % per process over ``wall`` seconds (100 = one core), and what the rest of the
    machine used meanwhile (other people's work on the same 2 cores)."""
    out = {k: round(100 * (cpu1[k] - cpu0.get(k, 0.0)) / wall, 1) for k in cpu1}
    machine = out.get("machine (all cores)", 0.0)
    mine = sum(v for k, v in out.items() if k != "machine (all cores)" and "(whole" not in k)
    out["everything else on the machine"] = round(max(0.0, machine - mine), 1)
    return out


async def _processed(http: httpx.AsyncClient) -> int:
    r = await http.get("/healthz")
    return int(r.json().get("positions_processed", 0))


class _Publishers:
    """Several publisher processes (:mod:`simulator.bench_pub`), each owning a share of vehicles."""

    def __init__(self, port: int, prefix: str, n_vehicles: int, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.out: mp.Queue[Any] = ctx.Queue()
        self.cmds: list[mp.Queue[Any]] = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(
                target=publisher_main,
                args=(port, prefix, i, count, n_vehicles, self.cmds[i], self.out),
                daemon=True,
            )
            for i in range(count)
        ]
        for p in self.procs:
            p.start()

    def pids(self) -> dict[str, int]:
        return {f"publisher {i}": int(p.pid or 0) for i, p in enumerate(self.procs)}

    async def job(self, job: tuple[Any, ...], timeout: float, qos: int = 0) -> dict[str, Any]:
        """Give every publisher its share of ``job`` (messages at ``qos``); merge their reports."""
        count = len(self.procs)
        kind = job[0]
        for cmd in self.cmds:
            if kind == "burst":
                cmd.put(("burst", job[1] // count, qos))
            else:
                _, rate, duration, sos_per_s = job
                cmd.put(("rate", rate / count, duration, sos_per_s / count, qos))
        reports = [await asyncio.to_thread(self.out.get, True, timeout) for _ in range(count)]
        merged: dict[str, Any] = {
            "sent": sum(r["sent"] for r in reports),
            "pubacks": sum(r.get("pubacks") or 0 for r in reports),
            "elapsed": max(r["elapsed"] for r in reports),
            "last": {},
            "sos": [],
        }
        for r in reports:
            merged["last"].update(r.get("last", {}))
            merged["sos"] += r.get("sos", [])
        return merged

    def stop(self) -> None:
        for cmd in self.cmds:
            cmd.put(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


async def _baseline(
    port: int, prefix: str, pubs: _Publishers, broker: psutil.Process, n: int, qos: int = 0
) -> dict[str, Any]:
    """How fast ``mosquitto_sub`` alone receives ``n`` messages of the benchmark's stream.

    The publishers send as fast as the broker takes them, so the figure is the
    broker → subscriber rate on this machine (every process shares its 2 cores).
    At ``qos`` 1 the messages are published and subscribed at QoS 1 (mosquitto_sub
    acknowledges each on receipt, with no session kept).
    """
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub",
        "-p",
        str(port),
        "-i",
        f"{prefix}baseline-sub-q{qos}",
        "-t",
        f"{prefix}fleet/+/position",
        "-C",
        str(n),
        "-q",
        str(qos),
        stdout=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    procs = {"mosquitto": broker}
    procs.update({k: psutil.Process(v) for k, v in pubs.pids().items()})
    cpu0 = _cpu(procs)
    children0 = os.times()
    t0 = time.perf_counter()
    burst = asyncio.create_task(pubs.job(("burst", n), 120, qos))
    try:
        await aio.wait_for(sub.wait(), 120)
        recv_s = time.perf_counter() - t0
        got = n
    except TimeoutError:
        sub.kill()
        await sub.wait()
        recv_s, got = time.perf_counter() - t0, -1
    cpu1 = _cpu(procs)
    # mosquitto_sub has exited: its CPU time is in our children's (no other child ends here).
    children1 = os.times()
    cpu1["mosquitto_sub"] = (
        children1.children_user
        - children0.children_user
        + children1.children_system
        - children0.children_system
    )
    pub = await burst
    cpu = _percent(cpu0, cpu1, recv_s)
    ours = {k: v for k, v in cpu.items() if k in procs or k == "mosquitto_sub"}
    busiest = max(ours, key=lambda k: ours[k]) if ours else None
    return {
        "qos": qos,
        "messages": n,
        "received": got,
        "publishers": len(pubs.procs),
        "mosquitto_sub_msgs_per_s": round(n / recv_s) if got == n else None,
        "publishers_msgs_per_s": round(pub["sent"] / pub["elapsed"]),
        "cpu_percent": cpu,
        "limited_by": busiest,
    }


async def _step(
    http: httpx.AsyncClient,
    pubs: _Publishers,
    stats: _FeedStats,
    procs: dict[str, psutil.Process],
    rate: int,
    seconds: float,
    qos: int = 0,
) -> dict[str, Any]:
    """Publish at ``rate`` for ``seconds``; count both ends; latency and CPU per process.

    At QoS 1 nothing is dropped: what the service has not processed within
    ``SETTLE_S`` is a backlog the broker holds (the step fails on it), and the
    step then waits up to ``BACKLOG_DRAIN_S`` more for it to drain, so the next
    step starts from an empty queue (``backlog_drained``).
    """
    stats.reset()
    before = await _processed(http)
    cpu0, w0 = _cpu(procs), time.perf_counter()
    sent = await pubs.job(("rate", rate, seconds, ALARMS_PER_S), seconds + 60, qos)
    cpu_pub, w_pub = _cpu(procs), time.perf_counter()
    # Let the pipeline drain, then count at the service and on the feed.
    processed = before
    deadline = time.perf_counter() + SETTLE_S
    while time.perf_counter() < deadline:
        processed = await _processed(http)
        if processed - before >= sent["sent"]:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # one more feed interval for the last frames
    cpu1 = _cpu(procs)
    stale = sum(1 for v, ts in sent["last"].items() if stats.last_ts.get(f"v{v:05d}", 0) < ts)
    sos_vehicles = {f"v{v:05d}" for v, _ in sent["sos"]}
    step: dict[str, Any] = {
        "qos": qos,
        "offered_msgs_per_s": rate,
        "published_msgs_per_s": round(sent["sent"] / sent["elapsed"]),
        "sent": sent["sent"],
        "lost_at_service": sent["sent"] - (processed - before),
        "vehicles_stale_on_feed": stale,
        "alarms_sent": len(sent["sos"]),
        "alarms_on_feed": len(sos_vehicles & stats.alarm_vehicles),
        "position_latency_ms": {
            "p50": _pct(stats.pos_lat, 0.5),
            "p99": _pct(stats.pos_lat, 0.99),
            "max": _pct(stats.pos_lat, 1.0),
        },
        "alarm_latency_ms": {
            "p50": _pct(stats.alarm_lat, 0.5),
            "p99": _pct(stats.alarm_lat, 0.99),
            "max": _pct(stats.alarm_lat, 1.0),
        },
        # While publishing (the drain afterwards would dilute it), 100 = one core busy.
        "cpu_percent": _percent(cpu0, cpu_pub, w_pub - w0),
        "drain_s": round(time.perf_counter() - w_pub, 2),
        # CPU time per message, drain included: less sensitive than rates to other work
        # on the machine.
        "cpu_us_per_msg": {
            k: round(1e6 * (cpu1[k] - cpu0.get(k, 0.0)) / max(sent["sent"], 1), 1)
            for k in ("service", "mosquitto")
            if k in cpu1
        },
    }
    step["ok"] = (
        step["lost_at_service"] == 0
        and stale == 0
        and step["alarms_on_feed"] >= step["alarms_sent"]
        and (step["position_latency_ms"]["p99"] or 0) < LATENCY_OK_MS
    )
    if qos:
        step["broker_pubacks"] = sent.get("pubacks")
        # Nothing can be lost at QoS 1 (the broker holds it; the run's totals check that):
        # what is missing after the settle time is late.
        step["not_processed_within_settle"] = step["lost_at_service"]
        step["lost_at_service"] = 0
        deadline = time.perf_counter() + BACKLOG_DRAIN_S
        while processed - before < sent["sent"] and time.perf_counter() < deadline:
            await asyncio.sleep(0.25)
            processed = await _processed(http)
        step["backlog_drained"] = processed - before >= sent["sent"]
    return step


MODES: dict[str, dict[str, Any]] = {
    # The configuration people run (issue 19): QoS 1 end to end, PUBACK only after the
    # durable write, a persistent session that keeps the queue while the service is away.
    "no_loss": {"qos": 1, "ack": "after_store", "persistent_session": True},
    # The old headline: QoS 0, acknowledgement on receipt, no session kept.
    "qos0": {"qos": 0, "ack": "on_receive", "persistent_session": False},
}
CLIENTS = ("aiomqtt", "gmqtt", "paho", "fast")
LIBRARIES = ("aiomqtt", "gmqtt", "paho")  # maintained libraries; "fast" is the hand-written one
KEEP_WITHIN = 0.75  # keep the hand-written client only if no library reaches 75 % of it


def _pg_reachable(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _end_session(port: int, client_id: str) -> None:
    """Discard the broker's persistent session of ``client_id`` (CONNECT with clean start and
    no expiry, then DISCONNECT), so it stops queueing the next runs' messages."""
    from ingest.mqtt_wire import MqttWire

    wire = MqttWire(v5=True)
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(wire.connect(client_id=client_id, clean=True, session_expiry_s=0))
        sock.recv(64)  # CONNACK
        sock.sendall(MqttWire.DISCONNECT)


class _Rig:
    """What the runs of one benchmark share: the broker, the publishers, the fleet."""

    def __init__(self, tmp: Path, quick: bool, broker_port: int | None) -> None:
        self.tmp = tmp
        self.quick = quick
        self.broker, self.port = _mosquitto(tmp, broker_port)
        self.prefix = f"bench{os.getpid()}/"
        self.n_veh = 1000 if quick else N_VEHICLES
        self.pubs = _Publishers(self.port, self.prefix, self.n_veh, N_PUBLISHERS)
        self.procs: dict[str, psutil.Process] = {"mosquitto": psutil.Process(self.broker.pid)}
        self.runs = 0

    def close(self) -> None:
        self.pubs.stop()
        self.broker.terminate()
        self.broker.wait(10)


REFINE_STEPS = 2  # bisections between the last passing and the first failing coarse rate
COARSE_TOP = 150_000  # above what this machine's broker forwards (mosquitto_sub alone)


async def _ramp(
    http: httpx.AsyncClient,
    rig: _Rig,
    stats: _FeedStats,
    procs: dict[str, psutil.Process],
    rates: list[int] | None,
    seconds: float,
    qos: int,
) -> list[dict[str, Any]]:
    """Steps up the load: ``rates`` as given, or coarse 10k steps then two bisections.

    A failing coarse step is run once more before it ends the coarse ramp. The
    bisections put the figure within a quarter of a coarse step (2,500 msg/s) in a
    few steps, where a fine ramp would take many; a QoS 1 step whose broker
    backlog does not drain ends the ramp (the next step would start behind).
    """
    steps: list[dict[str, Any]] = []
    if rates:
        for rate in rates:
            step = await _step(http, rig.pubs, stats, procs, rate, seconds, qos)
            steps.append(step)
            if qos and not step.get("backlog_drained", True):
                break
            if not step["ok"] and (
                step["lost_at_service"] > 0.2 * step["sent"]
                or (len(steps) >= 2 and not steps[-2]["ok"])
            ):
                break
        return steps
    coarse = [5_000, *range(10_000, COARSE_TOP + 1, 10_000)]
    good, bad = 0, 0
    for rate in coarse:
        step = await _step(http, rig.pubs, stats, procs, rate, seconds, qos)
        steps.append(step)
        if not step["ok"] and step.get("backlog_drained", True):
            # Once more before concluding: on a shared machine one step can fall on
            # someone else's burst of work, and the whole ramp would stop there.
            step = await _step(http, rig.pubs, stats, procs, rate, seconds, qos)
            step["retry"] = True
            steps.append(step)
        if not step["ok"]:
            bad = rate
            break
        good = rate
    if not bad or (qos and not steps[-1].get("backlog_drained", True)):
        return steps
    for _ in range(REFINE_STEPS):
        mid = (good + bad) // 2 // 500 * 500
        if mid <= good:
            break
        step = await _step(http, rig.pubs, stats, procs, mid, seconds, qos)
        steps.append(step)
        if step["ok"]:
            good = mid
        else:
            bad = mid
            if qos and not step.get("backlog_drained", True):
                break
    return steps


async def _service_run(
    rig: _Rig,
    *,
    client: str,
    mode: str,
    history: str,
    live: str,
    pg_dsn: str,
    rates: list[int] | None,
    seconds: float,
    profile: bool = False,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``fleetwatch serve`` (one engine node) with ``client`` at ``mode``, ramped.

    ``mqtt`` overrides ``[mqtt]`` keys (e.g. ``receive_maximum``) after the mode's.
    """
    from simulator.fleet import FleetSpec
    from simulator.scenario import fleet_config
    from simulator.toml import dumps

    rig.runs += 1
    tmp = rig.tmp / f"run{rig.runs}"
    tmp.mkdir()
    web_port = _free_port()
    client_id = f"{rig.prefix[:-1]}-{rig.runs}-{client}-{mode}"
    doc = fleet_config(
        FleetSpec(vehicles=rig.n_veh),
        mqtt_port=rig.port,
        web_port=web_port,
        db_path=str(tmp / "history.db"),
        token=TOKEN,
        topic_prefix=rig.prefix,
        client_id=client_id,
    )
    qos = int(MODES[mode]["qos"])
    doc["mqtt"].update(MODES[mode])
    doc["mqtt"]["protocol"] = "5"  # Receive Maximum bounds the QoS 1 messages in flight
    doc["mqtt"]["client"] = client
    doc["mqtt"].update(mqtt or {})
    schema = f"bench_e2e_{os.getpid()}_{rig.runs}"
    if history == "postgres":
        doc["store"] = {
            "kind": "postgres",
            "postgres_dsn": pg_dsn,
            "postgres_schema": schema,
            "timescale": "off",
            "spool_dir": str(tmp / "spool"),
        }
    else:
        doc["store"]["sqlite_synchronous"] = "NORMAL"
    if live == "redis":
        doc["live"] = {"kind": "redis", "key_prefix": f"{schema}:"}
    doc["web"]["feed_interval_ms"] = 50
    doc["web"]["feed_client_buffer"] = 4096
    cfg_path = tmp / "generated.toml"
    cfg_path.write_text(dumps(doc), encoding="utf-8")
    procs = dict(rig.procs)
    argv = [sys.executable, "-m", "fleetwatch.cli", "serve", "--config", str(cfg_path)]
    result: dict[str, Any] = {
        "client": client,
        "mode": mode,
        "config": {k: doc[k] for k in ("mqtt", "ingest", "store", "live") if k in doc},
        "service_argv": argv[1:],
    }
    # The service imports this checkout's packages, wherever the benchmark is run from.
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    service = subprocess.Popen(argv, stderr=open(tmp / "service.log", "wb"), env=env)  # noqa: SIM115
    spy: subprocess.Popen[bytes] | None = None
    try:
        procs["service"] = psutil.Process(service.pid)
        procs["bench (websocket clients)"] = psutil.Process()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=5) as http:
            await _healthy(http, service, tmp)
            if profile:
                spy = _py_spy(service.pid, tmp / "profile.txt")
            stats = _FeedStats()
            url = f"ws://127.0.0.1:{web_port}/ws/live?token={TOKEN}"
            clients = [
                asyncio.create_task(_ws_client(url, stats, record=k == 0))
                for k in range(WS_CLIENTS)
            ]
            await asyncio.sleep(0.5)
            steps = await _ramp(http, rig, stats, procs, rates, seconds, qos)
            result["steps"] = steps
            good = [s for s in steps if s["ok"]]
            best = max(good, key=lambda s: s["published_msgs_per_s"]) if good else None
            result["max_sustained_msgs_per_s"] = best["published_msgs_per_s"] if best else 0
            if best:
                us = best["cpu_us_per_msg"].get("service")
                result["service_cpu_us_per_msg"] = us
                # Messages per second one core of the engine node would carry at that cost.
                result["per_core_msgs_per_s"] = round(1e6 / us) if us else None
                result["service_cores_at_max"] = round(
                    best["cpu_percent"].get("service", 0.0) / 100, 2
                )
                result["at_half_max"] = await _step(
                    http, rig.pubs, stats, procs, best["offered_msgs_per_s"] // 2, seconds, qos
                )
            half = result.get("at_half_max", {})
            result["alarm_p99_at_half_max_ms"] = half.get("alarm_latency_ms", {}).get("p99")
            for c in clients:
                c.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            metrics = (await http.get("/metrics")).text
            result["stage_seconds"] = _stage_seconds(metrics)
            result["dropped"] = _counter(metrics, "fleetwatch_dropped_total")
            health = (await http.get("/healthz")).json()
            result["positions_processed"] = health.get("positions_processed")
            result["positions_stored"] = health.get("positions_stored")
            result["positions_sent"] = sum(s["sent"] for s in steps) + half.get("sent", 0)
    except (httpx.HTTPError, OSError) as exc:
        # The service went away mid-run: say so with its last words, keep the other runs.
        code = service.poll()
        log = (tmp / "service.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{type(exc).__name__}: {exc}; service exit code {code}; {log}") from exc
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.wait(30)
            if service.poll() is None:
                service.kill()
                service.wait(5)
        if MODES[mode]["persistent_session"]:
            _end_session(rig.port, client_id)
        if history == "postgres":
            _drop_schema(pg_dsn, schema)
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            if spy.poll() is None:
                spy.kill()
                spy.wait(5)
    if (tmp / "profile.txt").exists():
        result["profile_path"] = str(tmp / "profile.txt")
        result["service_profile"] = _profile_summary(tmp / "profile.txt")
    return result


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarize(runs: list[dict[str, Any]], baselines: dict[str, Any]) -> dict[str, Any]:
    """Medians per mode and client, ratios within each repeat, and the 25 % decision.

    Ratios are taken inside one repeat (the same minutes on the same machine), then
    their median: other work on the 2 cores moves all clients of a repeat together.
    """
    out: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        base = baselines.get(mode, {}).get("mosquitto_sub_msgs_per_s")
        per_client: dict[str, Any] = {}
        for client in CLIENTS:
            rs = [r for r in mine if r["client"] == client]
            if not rs:
                continue
            rates = [float(r["max_sustained_msgs_per_s"]) for r in rs]
            cores = [float(r["per_core_msgs_per_s"]) for r in rs if r.get("per_core_msgs_per_s")]
            ratios, core_ratios = [], []
            for r in rs:
                twin = [
                    f for f in mine if f["client"] == "fast" and f.get("repeat") == r.get("repeat")
                ]
                fast = twin[0]["max_sustained_msgs_per_s"] if twin else 0
                if fast:
                    ratios.append(r["max_sustained_msgs_per_s"] / fast)
                fast_core = twin[0].get("per_core_msgs_per_s") if twin else None
                if fast_core and r.get("per_core_msgs_per_s"):
                    core_ratios.append(r["per_core_msgs_per_s"] / fast_core)
            alarm = [
                float(r["alarm_p99_at_half_max_ms"])
                for r in rs
                if r.get("alarm_p99_at_half_max_ms") is not None
            ]
            med = _median(rates)
            per_client[client] = {
                "max_sustained_msgs_per_s": rates,
                "median_msgs_per_s": med,
                "per_core_msgs_per_s": cores,
                "median_per_core_msgs_per_s": _median(cores),
                "ratio_to_fast": [round(x, 3) for x in ratios],
                "median_ratio_to_fast": round(_median(ratios) or 0.0, 3) if ratios else None,
                # CPU per message, the same ratio: less moved by other work on the machine.
                "per_core_ratio_to_fast": [round(x, 3) for x in core_ratios],
                "median_per_core_ratio_to_fast": round(_median(core_ratios) or 0.0, 3)
                if core_ratios
                else None,
                "median_ratio_to_mosquitto_sub": round(med / base, 3) if med and base else None,
                "median_alarm_p99_at_half_max_ms": _median(alarm),
            }
        out[mode] = {"mosquitto_sub_msgs_per_s": base, "clients": per_client}
    no_loss = out.get("no_loss", {}).get("clients", {})
    libs = {c: no_loss[c]["median_ratio_to_fast"] for c in LIBRARIES if c in no_loss}
    if "fast" in no_loss and libs and all(v is not None for v in libs.values()):
        best = max(libs, key=lambda c: libs[c] or 0.0)
        keep = (libs[best] or 0.0) < KEEP_WITHIN
        out["decision"] = {
            "rule": f"keep the hand-written client only if no maintained library reaches "
            f"{KEEP_WITHIN:.0%} of it at the no-loss configuration",
            "best_library": best,
            "best_library_ratio_to_fast": libs[best],
            "best_library_per_core_ratio_to_fast": no_loss[best]["median_per_core_ratio_to_fast"],
            "keep_hand_written_client": keep,
        }
    return out


async def _bench(
    quick: bool,
    tmp: Path,
    out_dir: Path,
    profile: bool,
    history: str,
    live: str,
    rates: list[int] | None,
    pg_dsn: str,
    clients: tuple[str, ...] = CLIENTS,
    modes: tuple[str, ...] = ("no_loss", "qos0"),
    repeats: int = 1,
    seconds: float | None = None,
    broker_port: int | None = None,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if history == "auto":
        history = "postgres" if _pg_reachable(pg_dsn) else "sqlite"
    rig = _Rig(tmp, quick, broker_port)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "vehicles": rig.n_veh,
        "websocket_clients": WS_CLIENTS,
        "history": history,
        "payload_example": position_body(1764034200000, 30.4, 106.58, 0).decode(),
        "modes": {m: MODES[m] for m in modes},
        "clients": list(clients),
        "repeats": repeats,
        "mqtt_overrides": mqtt or {},
    }
    runs: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(1.0)  # the publishers connect
        rig.procs.update({k: psutil.Process(v) for k, v in rig.pubs.pids().items()})
        n_base = 200_000 if quick else 500_000
        baselines = {}
        for mode in modes:
            baselines[mode] = await _baseline(
                rig.port, rig.prefix, rig.pubs, rig.procs["mosquitto"], n_base, MODES[mode]["qos"]
            )
        result["baseline"] = baselines
        step_s = seconds or (3.0 if quick else 5.0)
        for rep in range(repeats):
            # Rotate the order each repeat so that a drift of the machine's load over the
            # run does not always fall on the same client.
            order = list(clients[rep % len(clients) :] + clients[: rep % len(clients)])
            for mode in modes:
                for client in order:
                    try:
                        run = await _service_run(
                            rig,
                            client=client,
                            mode=mode,
                            history=history,
                            live=live,
                            pg_dsn=pg_dsn,
                            rates=rates,
                            seconds=step_s,
                            profile=profile,
                            mqtt=mqtt,
                        )
                    except RuntimeError as exc:
                        run = {"client": client, "mode": mode, "error": str(exc)[-1500:]}
                        run["max_sustained_msgs_per_s"] = 0
                    run["repeat"] = rep
                    runs.append(run)
                    print(
                        f"e2e repeat {rep} {mode:8s} {client:8s} "
                        f"{run.get('max_sustained_msgs_per_s')} msg/s "
                        f"per core {run.get('per_core_msgs_per_s')}",
                        file=sys.stderr,
                        flush=True,
                    )
        result["runs"] = runs
        result["summary"] = summarize(runs, baselines)
        result["headline"] = _headline(result["summary"])
    finally:
        rig.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if run.get("profile_path") and Path(run["profile_path"]).exists():
            name = f"bench_e2e_profile_{run['mode']}_{run['client']}_{run['repeat']}.txt"
            shutil.copy(run["profile_path"], out_dir / name)
    (out_dir / "bench_e2e.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    _plot(result, out_dir / "bench_e2e.png")
    result["artifacts"] = [str(out_dir / "bench_e2e.json"), str(out_dir / "bench_e2e.png")]
    return result


def _headline(summary: dict[str, Any]) -> dict[str, Any]:
    """Row 1: the no-loss configuration; row 2: QoS 0 — per engine node and per core.

    For the client the decision keeps (the hand-written one, or the best library),
    and for the service's default client (aiomqtt).
    """
    decision = summary.get("decision", {})
    chosen = "fast" if decision.get("keep_hand_written_client", True) else decision["best_library"]
    rows = {}
    for mode in ("no_loss", "qos0"):
        cl = summary.get(mode, {}).get("clients", {})
        for client in dict.fromkeys((chosen, "aiomqtt")):
            if client in cl:
                rows[f"{mode} / {client}"] = {
                    "per_engine_node_msgs_per_s": cl[client]["median_msgs_per_s"],
                    "per_core_msgs_per_s": cl[client]["median_per_core_msgs_per_s"],
                    "ratio_to_mosquitto_sub": cl[client]["median_ratio_to_mosquitto_sub"],
                }
    return {"client": chosen, "rows": rows}


async def _healthy(http: httpx.AsyncClient, service: subprocess.Popen[bytes], tmp: Path) -> None:
    for _ in range(300):
        if service.poll() is not None:
            raise RuntimeError("service exited: " + (tmp / "service.log").read_text()[-2000:])
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get("/healthz")).json().get("ok"):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError("service not healthy: " + (tmp / "service.log").read_text()[-2000:])


def _counter(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            label = line.split('="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


def _stage_seconds(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("fleetwatch_stage_seconds_sum"):
            name = line.split('stage="', 1)[1].split('"', 1)[0]
            out[name] = round(float(line.rsplit(" ", 1)[1]), 3)
    return out


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    """Sample the service with py-spy until it exits (collapsed stacks, idle excluded)."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        return None
    argv = [str(exe), "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
    argv += ["--output", str(out), "--nonblocking"]
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _frame_name(frame: str) -> str:
    """``"add (ingest/core.py:120)"`` → ``"add (core.py)"``: one entry per function."""
    func, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{func} ({file})" if file else func


def _profile_summary(path: Path, n: int = 25) -> dict[str, Any]:
    """Share of CPU samples per function: where it runs (self) and below it (total)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        samples += c
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            total[f] = total.get(f, 0) + c

    def top(d: dict[str, int]) -> list[tuple[str, float]]:
        rows = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [(k, round(100 * v / max(samples, 1), 1)) for k, v in rows]

    return {"samples": samples, "self_percent": top(own), "total_percent": top(total)}


def _plot(result: dict[str, Any], path: Path) -> None:
    """p99 publish-to-feed latency against load, one line per client and mode (first repeat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in result.get("runs", []) if r.get("repeat") == 0 and r.get("steps")]
    if not runs:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        x = [s["published_msgs_per_s"] for s in r["steps"]]
        y = [s["position_latency_ms"]["p99"] for s in r["steps"]]
        style = "-o" if r["mode"] == "no_loss" else ":s"
        ax.plot(
            x,
            [v if v is not None else float("nan") for v in y],
            style,
            ms=3,
            label=f"{r['client']} {r['mode']}",
        )
    ax.axhline(LATENCY_OK_MS, color="grey", lw=0.8)
    for mode, b in result.get("baseline", {}).items():
        base = b.get("mosquitto_sub_msgs_per_s")
        if base:
            ax.axvline(
                base, color="black", ls=":", lw=1, label=f"mosquitto_sub {mode} ({base:,}/s)"
            )
    ax.set_yscale("log")
    ax.set_xlabel("published messages/s")
    ax.set_ylabel("p99 publish → feed latency, ms")
    ax.set_title("FleetWatch end to end, one engine node (2 cores shared)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    quick: bool = False,
    out_dir: str = "artifacts",
    profile: bool = False,
    *,
    history: str = "auto",
    live: str = "memory",
    rates: list[int] | None = None,
    pg_dsn: str = PG_DSN,
    clients: tuple[str, ...] | list[str] | str = CLIENTS,
    modes: tuple[str, ...] | list[str] = ("no_loss", "qos0"),
    repeats: int | None = None,
    seconds: float | None = None,
    broker_port: int | None = None,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the end-to-end benchmark; return the figures (also written under ``out_dir``).

    Every ``client`` (``mqtt.client``: aiomqtt, gmqtt, paho, the built-in ``fast``)
    is ramped at every mode (``no_loss``: QoS 1, PUBACK after the durable write,
    persistent session — the headline; ``qos0``: the old headline), ``repeats``
    times (default 3; 1 with ``quick``) against one broker and one set of
    publishers, so that the ratios come from the same run. ``clients="fast"``
    runs one client; ``mqtt`` overrides ``[mqtt]`` keys of every service run.
    """
    if isinstance(clients, str):
        clients = (clients,)
    for c in clients:
        if c not in CLIENTS:
            raise ValueError(f"unknown client {c!r}: one of {', '.join(CLIENTS)}")
    for m in modes:
        if m not in MODES:
            raise ValueError(f"unknown mode {m!r}: one of {', '.join(MODES)}")
    reps = repeats if repeats is not None else (1 if quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(
            _bench(
                quick,
                Path(tmp),
                Path(out_dir),
                profile,
                history,
                live,
                rates,
                pg_dsn,
                tuple(clients),
                tuple(modes),
                reps,
                seconds,
                broker_port,
                mqtt,
            )
        )
