"""``fleetwatch bench e2e``: the whole service under a rising load, against the physical baseline.

One run, on this machine, nothing shared with other tests:

1. A Mosquitto of our own on a free port (``mosquitto -c FILE``), configured
   to queue without limit, so a loss is FleetWatch's and is counted.
2. ``fleetwatch serve --config generated.toml`` as a child process: SQLite
   history, memory live state, the simulated city's fences and rules.
3. Websocket clients on ``/ws/live``; a publisher process (paho-mqtt, one
   JSON position per message, ``ts`` = the wall clock at publish) that also
   raises an SOS bit now and then, so alarm latency is measured too.
4. Rates ramp up; at each rate: messages sent, positions the service processed
   (``/healthz``), whether every vehicle's last position reached the feed,
   p50/p99 publish-to-feed latency of positions and of alarms, CPU per process.
   The highest rate with nothing lost and p99 under 1 s is the result.
5. The baseline in the same run: how fast ``mosquitto_sub`` alone receives the
   same messages.

The JSON goes to stdout (``--json``) and, with the PNG plot of latency
against load, under ``artifacts/``.
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

__all__ = ["run"]

TOKEN = "bench-token-0123456789"
N_VEHICLES = 2000
WS_CLIENTS = 4
LATENCY_OK_MS = 1000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
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


# -- the publisher process --------------------------------------------------------------------


def _publisher(
    port: int, prefix: str, cmd: mp.Queue[Any], out: mp.Queue[Any], n_vehicles: int
) -> None:
    """Publish at the rates asked for; report what was sent."""
    import paho.mqtt.client as paho

    from simulator.fleet import terminal_id

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{prefix}pub")
    c.connect("127.0.0.1", port)
    c.loop_start()
    topics = [f"{prefix}fleet/{terminal_id(i)}/position" for i in range(n_vehicles)]
    base = [(30.40 + (i % 100) * 0.001, 106.58 + (i // 100) * 0.001) for i in range(n_vehicles)]
    k = 0
    while True:
        job = cmd.get()
        if job is None:
            break
        kind, rate, duration, sos_every = job
        sent = 0
        last_ts: dict[int, int] = {}
        sos: list[tuple[int, int]] = []
        t0 = time.perf_counter()
        wall0 = time.time()
        if kind == "burst":  # as fast as possible, `rate` messages in all
            topic = f"{prefix}burst"
            body = b'{"ts":1764034200000,"lat":30.456,"lon":106.633,"speed":42.5,"acc":true}'
            for _ in range(int(rate)):
                c.publish(topic, body)
            c.publish(f"{prefix}burst-end", b"", qos=1).wait_for_publish(30)
            out.put({"sent": int(rate), "elapsed": time.perf_counter() - t0})
            continue
        while True:
            el = time.perf_counter() - t0
            if el >= duration:
                break
            due = int(el * rate) - sent
            now_ms = int(wall0 * 1000 + el * 1000)
            for _ in range(max(0, due)):
                v = k % n_vehicles
                k += 1
                lat, lon = base[v]
                alarm = 0
                if sos_every and k % sos_every == 0:
                    alarm = 1
                    sos.append((v, now_ms))
                body = (
                    f'{{"ts":{now_ms},"lat":{lat:.6f},"lon":{lon:.6f},"speed":42.5,'
                    f'"heading":90,"acc":true,"alarm":{alarm}}}'
                ).encode()
                c.publish(topics[v], body)
                last_ts[v] = now_ms
                sent += 1
            time.sleep(0.002)
        c.publish(f"{prefix}mark", b"", qos=1).wait_for_publish(30)
        out.put({"sent": sent, "elapsed": time.perf_counter() - t0, "last": last_ts, "sos": sos})
    c.loop_stop()
    c.disconnect()


# -- the websocket clients --------------------------------------------------------------------


class _FeedStats:
    def __init__(self) -> None:
        self.pos_lat: list[float] = []
        self.alarm_lat: list[float] = []
        self.last_ts: dict[str, int] = {}
        self.alarms_open = 0

    def reset(self) -> None:
        self.pos_lat, self.alarm_lat, self.alarms_open = [], [], 0


async def _ws_client(url: str, stats: _FeedStats, record: bool) -> None:
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
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
                    stats.alarms_open += 1
                    stats.alarm_lat.append(now - a["started_at"])


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


def _cpu(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[name] = t.user + t.system
    return out


async def _processed(http: httpx.AsyncClient) -> int:
    r = await http.get("/healthz")
    return int(r.json().get("positions_processed", 0))


async def _baseline(
    port: int, prefix: str, cmd: mp.Queue[Any], out: mp.Queue[Any], n: int
) -> dict[str, Any]:
    """How fast ``mosquitto_sub`` alone receives ``n`` messages published as fast as we can."""
    sub = await asyncio.create_subprocess_exec(
        "mosquitto_sub",
        "-p",
        str(port),
        "-t",
        f"{prefix}burst",
        "-C",
        str(n),
        "-q",
        "0",
        stdout=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    cmd.put(("burst", n, 0, 0))
    try:
        await asyncio.wait_for(sub.wait(), 120)
        recv_s = time.perf_counter() - t0
        got = n
    except TimeoutError:
        sub.kill()
        recv_s, got = time.perf_counter() - t0, -1
    pub = await asyncio.to_thread(out.get, True, 120)
    return {
        "messages": n,
        "received": got,
        "mosquitto_sub_msgs_per_s": round(n / recv_s) if got == n else None,
        "publisher_msgs_per_s": round(pub["sent"] / pub["elapsed"]),
    }


async def _bench(quick: bool, tmp: Path, out_dir: Path, profile: bool) -> dict[str, Any]:
    from simulator.fleet import FleetSpec
    from simulator.scenario import fleet_config
    from simulator.toml import dumps

    broker, port = _mosquitto(tmp)
    procs: dict[str, psutil.Process] = {"mosquitto": psutil.Process(broker.pid)}
    prefix = f"bench{os.getpid()}/"
    web_port = _free_port()
    n_veh = 500 if quick else N_VEHICLES
    doc = fleet_config(
        FleetSpec(vehicles=n_veh),
        mqtt_port=port,
        web_port=web_port,
        db_path=str(tmp / "history.db"),
        token=TOKEN,
        topic_prefix=prefix,
        client_id=f"{prefix[:-1]}-ingest",
    )
    doc["mqtt"]["receive_maximum"] = 65535
    doc["store"]["sqlite_synchronous"] = "NORMAL"
    doc["web"]["feed_interval_ms"] = 50
    doc["web"]["feed_client_buffer"] = 4096
    cfg_path = tmp / "generated.toml"
    cfg_path.write_text(dumps(doc), encoding="utf-8")
    ctx = mp.get_context("spawn")
    cmd: mp.Queue[Any] = ctx.Queue()
    res: mp.Queue[Any] = ctx.Queue()
    pub = ctx.Process(target=_publisher, args=(port, prefix, cmd, res, n_veh), daemon=True)
    service: subprocess.Popen[bytes] | None = None
    result: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "vehicles": n_veh}
    try:
        pub.start()
        procs["publisher"] = psutil.Process(pub.pid)
        result["baseline"] = await _baseline(
            port, prefix, cmd, res, 200_000 if quick else 1_000_000
        )
        argv = [sys.executable]
        prof = tmp / "service.prof"
        if profile:
            argv += ["-m", "cProfile", "-o", str(prof)]
        argv += ["-m", "fleetwatch.cli", "serve", "--config", str(cfg_path)]
        result["service_argv"] = argv[1:]
        service = subprocess.Popen(argv, stderr=open(tmp / "service.log", "wb"))  # noqa: SIM115
        procs["service"] = psutil.Process(service.pid)
        procs["bench (websocket clients)"] = psutil.Process()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=5) as http:
            for _ in range(200):
                if service.poll() is not None:
                    raise RuntimeError(
                        "service exited: " + (tmp / "service.log").read_text()[-2000:]
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).json().get("ok"):
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(
                    "service not healthy: " + (tmp / "service.log").read_text()[-2000:]
                )
            stats = _FeedStats()
            url = f"ws://127.0.0.1:{web_port}/ws/live?token={TOKEN}"
            clients = [
                asyncio.create_task(_ws_client(url, stats, record=k == 0))
                for k in range(WS_CLIENTS)
            ]
            await asyncio.sleep(0.5)
            rates = (
                [2_000, 5_000, 10_000]
                if quick
                else [
                    2_000,
                    5_000,
                    10_000,
                    15_000,
                    20_000,
                    30_000,
                    40_000,
                    60_000,
                ]
            )
            step_s = 3.0 if quick else 6.0
            steps = []
            for rate in rates:
                stats.reset()
                before = await _processed(http)
                cpu0, w0 = _cpu(procs), time.perf_counter()
                cmd.put(("rate", rate, step_s, max(1, rate // 20)))
                sent = await asyncio.to_thread(res.get, True, step_s + 60)
                # Give the pipeline a moment to settle, then count both ends.
                processed = before
                for _ in range(50):
                    await asyncio.sleep(0.2)
                    processed = await _processed(http)
                    if processed - before >= sent["sent"]:
                        break
                await asyncio.sleep(0.3)
                wall = time.perf_counter() - w0
                cpu1 = _cpu(procs)
                missing_feed = sum(
                    1 for v, ts in sent["last"].items() if stats.last_ts.get(f"v{v:05d}", 0) < ts
                )
                step = {
                    "offered_msgs_per_s": rate,
                    "published_msgs_per_s": round(sent["sent"] / sent["elapsed"]),
                    "sent": sent["sent"],
                    "lost_at_service": sent["sent"] - (processed - before),
                    "vehicles_stale_on_feed": missing_feed,
                    "alarms_sent": len(sent["sos"]),
                    "alarms_on_feed": stats.alarms_open,
                    "position_latency_ms": {
                        "p50": _pct(stats.pos_lat, 0.5),
                        "p99": _pct(stats.pos_lat, 0.99),
                    },
                    "alarm_latency_ms": {
                        "p50": _pct(stats.alarm_lat, 0.5),
                        "p99": _pct(stats.alarm_lat, 0.99),
                    },
                    "cpu_percent": {
                        k: round(100 * (cpu1[k] - cpu0.get(k, 0.0)) / wall, 1) for k in cpu1
                    },
                }
                step["ok"] = (
                    step["lost_at_service"] == 0
                    and missing_feed == 0
                    and step["alarms_on_feed"] >= step["alarms_sent"]
                    and (step["position_latency_ms"]["p99"] or 0) < LATENCY_OK_MS
                )
                steps.append(step)
                if not step["ok"] and step["lost_at_service"] > 0.2 * sent["sent"]:
                    break
            for c in clients:
                c.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            result["steps"] = steps
            good = [s for s in steps if s["ok"]]
            best = max(good, key=lambda s: s["published_msgs_per_s"]) if good else None
            result["max_sustained_msgs_per_s"] = best["published_msgs_per_s"] if best else 0
            base = result["baseline"].get("mosquitto_sub_msgs_per_s")
            if best and base:
                result["ratio_to_mosquitto_sub"] = round(best["published_msgs_per_s"] / base, 3)
            metrics = (await http.get("/metrics")).text
            result["stage_seconds"] = _stage_seconds(metrics)
    except RuntimeError as exc:
        # The baseline stands on its own; say why the service part did not run.
        result["error"] = str(exc)[-1500:]
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.wait(30)
            if service.poll() is None:
                service.kill()
        cmd.put(None)
        pub.join(10)
        if pub.is_alive():
            pub.kill()
        broker.terminate()
        broker.wait(10)
    if profile and (tmp / "service.prof").exists():
        result["service_profile_top"] = _profile_top(tmp / "service.prof")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_e2e.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    _plot(result, out_dir / "bench_e2e.png")
    result["artifacts"] = [str(out_dir / "bench_e2e.json"), str(out_dir / "bench_e2e.png")]
    return result


def _stage_seconds(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("fleetwatch_stage_seconds_sum"):
            name = line.split('stage="', 1)[1].split('"', 1)[0]
            out[name] = round(float(line.rsplit(" ", 1)[1]), 3)
    return out


def _profile_top(path: Path, n: int = 15) -> list[dict[str, Any]]:
    import pstats

    st = pstats.Stats(str(path))
    rows = []
    for (file, line, fn), (_cc, calls, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{line}:{fn}",
                "calls": calls,
                "tottime_s": round(tt, 3),
                "cumtime_s": round(ct, 3),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n]


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.get("steps", [])
    if not steps:
        return
    x = [s["published_msgs_per_s"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("position_latency_ms", "positions"), ("alarm_latency_ms", "alarms")):
        for q, style in (("p50", "-o"), ("p99", "--o")):
            y = [s[key][q] for s in steps]
            if any(v is not None for v in y):
                ax.plot(
                    x,
                    [v if v is not None else float("nan") for v in y],
                    style,
                    label=f"{label} {q}",
                )
    ax.axhline(LATENCY_OK_MS, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("published messages/s")
    ax.set_ylabel("publish → feed latency, ms")
    ax.set_title("FleetWatch end to end (broker, service, 4 websocket clients, 2 cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, out_dir: str = "artifacts", profile: bool = False) -> dict[str, Any]:
    """Run the end-to-end benchmark; return the figures (also written under ``out_dir``)."""
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_bench(quick, Path(tmp), Path(out_dir), profile))
