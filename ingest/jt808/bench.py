"""``fleetwatch bench decode``: JT/T 808 0x0200 decoding, batch path vs scalar path.

Frames carry typical additional items (mileage, fuel, extended status, IO,
signal, satellites), one frame per payload as the gateway publishes them.
Both paths run in the same process on one core, several rounds; medians are
reported. :func:`run_gateway_load` (``python -m ingest.jt808.bench --gateway``)
drives simulated terminals over loopback TCP through the gateway and the
broker at 127.0.0.1:1883 and reports the reply latency.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any

from fleet import aio
from ingest.jt808.codec import encode_location
from ingest.jt808.position import decode_position_payloads, decode_position_payloads_scalar

__all__ = ["make_frames", "run", "run_gateway_load"]


def make_frames(n: int, *, seed: int = 1, terminals: int = 1000) -> list[bytes]:
    """``n`` 0x0200 frames (2013 header) with typical additional items."""
    rng = random.Random(seed)
    t0 = 1_764_034_200_000
    return [
        encode_location(
            f"139{i % terminals:08d}",
            i & 0xFFFF,
            lat=30.0 + rng.random(),
            lon=106.0 + rng.random(),
            speed_kmh=round(rng.random() * 100, 1),
            heading=rng.randrange(360),
            alt_m=rng.randrange(200, 500),
            time_ms=t0 + i * 1000,
            status=3,
            mileage_km=round(rng.random() * 1e5, 1),
            fuel_l=40.0,
            ext_status=0,
            io_status=0,
            signal=25,
            satellites=12,
        )
        for i in range(n)
    ]


def _rate(decode: Any, chunks: list[list[bytes]], rounds: int) -> float:
    """Median frames/s of ``decode`` over ``chunks`` (one call per chunk)."""
    n = sum(len(c) for c in chunks)
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        rows = sum(len(decode(c)) for c in chunks)
        dt = time.perf_counter() - t
        assert rows == n
        rates.append(n / dt)
    return statistics.median(rates)


def run(quick: bool = False) -> dict[str, Any]:
    """Frames per second of the batch and scalar paths (medians), same run.

    The batch path gets the payloads in calls of ``batch_size`` (as the ingest
    stage flushes them); the scalar path a tenth of the frames, to keep it short.
    """
    batch_size = 5000
    n = 20_000 if quick else 200_000
    rounds = 3 if quick else 7
    frames = make_frames(n)
    chunks = [frames[i : i + batch_size] for i in range(0, n, batch_size)]
    batch_rate = _rate(decode_position_payloads, chunks, rounds)
    scalar_rate = _rate(
        decode_position_payloads_scalar, chunks[: max(1, len(chunks) // 10)], rounds
    )
    return {
        "name": "decode",
        "frames": n,
        "frame_bytes": len(frames[0]),
        "batch_size": batch_size,
        "rounds": rounds,
        "batch_frames_per_s": round(batch_rate),
        "scalar_frames_per_s": round(scalar_rate),
        "speedup": round(batch_rate / scalar_rate, 1),
        "target_batch_frames_per_s": 300_000,
    }


# --- gateway load: gateway, terminals and broker in separate processes -------------------------


def _gateway_process(cfg_data: dict[str, Any], conn: Connection, profile: str | None) -> None:
    """Child process: run the gateway on uvloop until the parent says stop; send back stats."""
    import uvloop

    from ingest.jt808.config import GatewayConfig
    from ingest.jt808.tcp import GatewayStats, run_gateway, tune_gc

    cfg = GatewayConfig.model_validate(cfg_data)
    stats = GatewayStats()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        started: asyncio.Future[tuple[str, int]] = loop.create_future()
        task = asyncio.create_task(run_gateway(cfg, stop=stop, started=started, stats=stats))
        conn.send(await aio.wait_for(started, 10))
        loop.add_reader(conn.fileno(), stop.set)
        await task
        loop.remove_reader(conn.fileno())

    tune_gc()  # as gateway_main does
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    uvloop.run(main())
    if prof is not None and profile:
        prof.disable()
        prof.dump_stats(profile)
    conn.recv()
    conn.send(dataclasses.asdict(stats))


async def _terminals(
    conn: Connection, addr: tuple[str, int], phones: range, interval_s: float, duration_s: float
) -> dict[str, Any]:
    from ingest.jt808.codec import decode_frame
    from ingest.jt808.framing import FrameSplitter
    from ingest.jt808.messages import PlatformReply

    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    latencies = array("d")
    sent_at = array("d")  # seconds since go, per report
    errors: dict[str, int] = {}
    connecting = asyncio.Semaphore(200)  # stay below the listen backlog

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def terminal(k: int, ready: asyncio.Future[None]) -> None:
        try:
            async with connecting:
                reader, writer = await aio.wait_for(asyncio.open_connection(*addr), 10)
        except (OSError, TimeoutError):
            error("connect")
            return
        finally:
            ready.set_result(None)
        sp = FrameSplitter()
        phone = f"188{k:08d}"
        serial = 0
        try:
            await go.wait()
            start = time.monotonic()
            end = start + duration_s
            await asyncio.sleep(random.random() * interval_s)
            while time.monotonic() < end:
                serial += 1
                frame = encode_location(phone, serial, lat=30.5, lon=106.6, speed_kmh=40.0,
                                        heading=90, alt_m=300,
                                        time_ms=int(time.time() * 1000))  # fmt: skip
                t0 = time.perf_counter()
                writer.write(frame)
                await writer.drain()
                got: list[bytes] = []
                while not got:
                    data = await aio.wait_for(reader.read(4096), 10)
                    if not data:
                        raise ConnectionError("closed")
                    got = sp.feed(data)
                latencies.append(time.perf_counter() - t0)
                sent_at.append(time.monotonic() - start)
                if decode_frame(got[0]).message != PlatformReply(serial, 0x0200, 0):
                    error("reply")
                await asyncio.sleep(interval_s)
        except TimeoutError:
            error("timeout")
        except OSError:
            error("closed")
        finally:
            writer.close()

    ready = [loop.create_future() for _ in phones]
    tasks = [asyncio.create_task(terminal(k, f)) for k, f in zip(phones, ready, strict=True)]
    await asyncio.gather(*ready)
    # The load generator is the measuring instrument: keep its own collector pauses out.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    conn.send(errors.get("connect", 0))
    loop.add_reader(conn.fileno(), go.set)
    await go.wait()
    loop.remove_reader(conn.fileno())
    conn.recv()
    await asyncio.gather(*tasks)
    return {"latencies": latencies.tobytes(), "sent_at": sent_at.tobytes(), "errors": errors}


def _terminals_process(
    conn: Connection, addr: tuple[str, int], phones: range, interval_s: float, duration_s: float
) -> None:
    """Child process: ``phones`` terminals on uvloop; connect, wait for go, report, send results."""
    import uvloop

    conn.send(uvloop.run(_terminals(conn, addr, phones, interval_s, duration_s)))


def run_gateway_load(
    terminals: int = 5000,
    interval_s: float = 10.0,
    duration_s: float = 60.0,
    *,
    workers: int = 2,
    mqtt: tuple[str, int] = ("127.0.0.1", 1883),
    profile: str | None = None,
) -> dict[str, Any]:
    """``terminals`` simulated terminals, one 0x0200 every ``interval_s``, over loopback TCP.

    The gateway runs in its own process (uvloop), the terminals in ``workers``
    other processes, the broker is Mosquitto at ``mqtt``. All terminals connect
    first; then each reports at a random phase within the interval for
    ``duration_s``. Latency is from the write of a report to the 0x8001 reply,
    which the gateway sends only after the broker acknowledged the QoS 1
    publish. ``profile`` names a file for a cProfile dump of the gateway.
    """
    ctx = mp.get_context("spawn")
    cfg = {
        "listen_port": 0,
        "mqtt_host": mqtt[0],
        "mqtt_port": mqtt[1],
        "mqtt_client_id": f"bench-gw-{os.getpid()}",
        "require_auth": False,
        "heartbeat_s": max(60.0, interval_s),
        "max_connections": terminals + 100,
    }
    gw_conn, gw_child = ctx.Pipe()
    gw = ctx.Process(target=_gateway_process, args=(cfg, gw_child, profile), daemon=True)
    gw.start()
    procs: list[tuple[Any, Connection]] = []
    try:
        if not gw_conn.poll(30):
            raise RuntimeError("the gateway did not start")
        addr = tuple(gw_conn.recv())
        workers = max(1, min(workers, terminals))
        for w in range(workers):
            parent, child = ctx.Pipe()
            phones = range(w, terminals, workers)
            args = (child, addr, phones, interval_s, duration_s)
            p = ctx.Process(target=_terminals_process, args=args, daemon=True)
            p.start()
            procs.append((p, parent))
        t = time.perf_counter()
        connect_errors = sum(c.recv() for _, c in procs)
        connect_s = time.perf_counter() - t
        for _, c in procs:
            c.send("go")
        t = time.perf_counter()
        results = [c.recv() for _, c in procs]
        wall = time.perf_counter() - t
        gw_conn.send("stop")
        gw_conn.send("stats")
        stats = gw_conn.recv() if gw_conn.poll(30) else {}
    finally:
        for p, _ in procs:
            p.join(5)
        gw.join(10)
        for p in [gw, *(p for p, _ in procs)]:
            if p.is_alive():
                p.kill()
    lat, sent_at = array("d"), array("d")
    errors: dict[str, int] = {"connect": connect_errors} if connect_errors else {}
    for r in results:
        lat.frombytes(r["latencies"])
        sent_at.frombytes(r["sent_at"])
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    ms = sorted(x * 1000 for x in lat)
    slow: dict[int, int] = {}  # second since go → reports over the target
    for at, x in zip(sent_at, lat, strict=True):
        if x > 0.05:
            slow[int(at)] = slow.get(int(at), 0) + 1

    def pct(q: float) -> float | None:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 2) if ms else None

    return {
        "name": "gateway",
        "terminals": terminals,
        "interval_s": interval_s,
        "duration_s": duration_s,
        "workers": workers,
        "connect_s": round(connect_s, 1),
        "wall_s": round(wall, 1),
        "reports": len(ms),
        "errors": sum(errors.values()),
        "errors_by_kind": errors,
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "max_ms": round(ms[-1], 2) if ms else None,
        "slow_by_second": dict(sorted(slow.items())),
        "gateway": {k: stats.get(k) for k in ("frames", "published", "bad_frames", "rate_limited")},
        "target_p99_ms": 50,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ingest.jt808.bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--gateway", action="store_true", help="the gateway load test instead")
    p.add_argument("--terminals", type=int, default=5000)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=2, help="terminal processes")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="broker HOST:PORT")
    p.add_argument("--profile", help="write a cProfile dump of the gateway here")
    a = p.parse_args(argv)
    if a.gateway:
        host, _, port = a.mqtt.rpartition(":")
        out = run_gateway_load(a.terminals, a.interval, a.duration, workers=a.workers,
                               mqtt=(host, int(port)), profile=a.profile)  # fmt: skip
    else:
        out = run(quick=a.quick)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
