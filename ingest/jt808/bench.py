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
import json
import random
import statistics
import sys
import time
from typing import Any

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


async def _gateway_load(terminals: int, interval_s: float, duration_s: float) -> dict[str, Any]:
    from ingest.jt808.codec import decode_frame
    from ingest.jt808.config import GatewayConfig
    from ingest.jt808.framing import FrameSplitter
    from ingest.jt808.messages import PlatformReply
    from ingest.jt808.tcp import run_gateway

    cfg = GatewayConfig(listen_port=0, require_auth=False, heartbeat_s=max(60.0, interval_s))
    stop = asyncio.Event()
    started: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    gw = asyncio.create_task(run_gateway(cfg, stop=stop, started=started))
    host, port = await asyncio.wait_for(started, 10)
    latencies: list[float] = []
    errors = 0

    async def terminal(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        sp = FrameSplitter()
        phone = f"188{k:08d}"
        await asyncio.sleep(random.random() * interval_s)
        end = time.monotonic() + duration_s
        serial = 0
        try:
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
                    data = await asyncio.wait_for(reader.read(4096), 10)
                    if not data:
                        raise ConnectionError("closed")
                    got = sp.feed(data)
                latencies.append(time.perf_counter() - t0)
                if decode_frame(got[0]).message != PlatformReply(serial, 0x0200, 0):
                    errors += 1
                await asyncio.sleep(interval_s)
        except (OSError, TimeoutError):
            errors += 1
        finally:
            writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(terminal(k) for k in range(terminals)))
    wall = time.perf_counter() - t
    stop.set()
    await gw
    latencies.sort()
    pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)  # noqa: E731
    return {
        "name": "gateway",
        "terminals": terminals,
        "interval_s": interval_s,
        "duration_s": duration_s,
        "wall_s": round(wall, 1),
        "reports": len(latencies),
        "errors": errors,
        "p50_ms": pct(0.5) if latencies else None,
        "p99_ms": pct(0.99) if latencies else None,
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
    }


def run_gateway_load(
    terminals: int = 5000, interval_s: float = 10.0, duration_s: float = 60.0
) -> dict[str, Any]:
    """``terminals`` simulated terminals, one 0x0200 every ``interval_s``, over loopback TCP.

    Latency is from the write of a report to the 0x8001 reply, which the
    gateway sends only after the broker acknowledged the QoS 1 publish.
    """
    return asyncio.run(_gateway_load(terminals, interval_s, duration_s))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m ingest.jt808.bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--gateway", action="store_true", help="the gateway load test instead")
    p.add_argument("--terminals", type=int, default=5000)
    p.add_argument("--interval", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=60.0)
    a = p.parse_args(argv)
    out = run_gateway_load(a.terminals, a.interval, a.duration) if a.gateway else run(quick=a.quick)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
