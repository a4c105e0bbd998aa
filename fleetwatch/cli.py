"""The ``fleetwatch`` command line.

Subcommands: ``demo``, ``serve``, ``gateway``, ``simulate``, ``decode``,
``bench``, ``check-config``, ``replay``. Each maps to one function; heavy
imports happen inside them so ``fleetwatch decode`` starts quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from typing import Any

from fleetwatch.errors import ConfigError

__all__ = ["main"]

# fleetwatch bench NAME → the module whose run(quick=...) returns the figures.
BENCHES: dict[str, str] = {
    "decode": "ingest.jt808.bench",
    "geofence": "geofence.bench",
    "rules": "rules.bench",
    "store": "store.bench",
    "feed": "stream.bench",
    "e2e": "simulator.bench",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetwatch", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole product locally with a simulated fleet")
    d.add_argument("--vehicles", type=int, default=200)
    d.add_argument("--port", type=int, default=8080, help="web page port")
    d.add_argument("--mqtt-port", type=int, default=18830, help="embedded broker port")
    d.add_argument("--data-dir", default="var/demo", help="where the SQLite history lives")
    d.add_argument("--speeding-share", type=float, default=0.05)
    d.add_argument("--duration", type=float, default=None, help="stop after N seconds")

    s = sub.add_parser("serve", help="run against external broker, database and cache")
    s.add_argument("--config", required=True)

    c = sub.add_parser("check-config", help="validate a configuration file")
    c.add_argument("file")

    sim = sub.add_parser("simulate", help="publish a simulated fleet to an MQTT broker")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=1883)
    sim.add_argument("--vehicles", type=int, default=200)
    sim.add_argument("--interval", type=float, default=10.0, help="report interval, seconds")
    sim.add_argument("--speeding-share", type=float, default=0.05)
    sim.add_argument("--speedup", type=float, default=1.0, help="simulated time per wall time")
    sim.add_argument("--duration", type=float, default=None, help="stop after N wall seconds")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--qos", type=int, choices=(0, 1), default=0)
    sim.add_argument("--lat", type=float, default=30.456)
    sim.add_argument("--lon", type=float, default=106.633)
    sim.add_argument(
        "--write-config",
        metavar="FILE",
        help="write a matching configuration (orgs, vehicles, fences) and exit",
    )

    dec = sub.add_parser("decode", help="decode JT/T 808 frames given as hex ('-' reads stdin)")
    dec.add_argument("args", nargs=argparse.REMAINDER)

    gw = sub.add_parser("gateway", help="JT/T 808 TCP gateway publishing to MQTT")
    gw.add_argument("args", nargs=argparse.REMAINDER)

    b = sub.add_parser("bench", help="run a benchmark: " + ", ".join(BENCHES))
    b.add_argument("name", choices=sorted(BENCHES))
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--quick", action="store_true", help="a smaller, faster run")

    r = sub.add_parser("replay", help="run the rules over stored history and list episodes")
    r.add_argument("--config", required=True)
    r.add_argument("--from", dest="from_", required=True, help="ISO date/time or epoch ms")
    r.add_argument("--to", required=True)
    r.add_argument("--json", action="store_true")
    return p


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "check-config":
        from fleetwatch.config import load_config

        cfg = load_config(args.file)
        print(
            f"{args.file}: OK — {len(cfg.orgs)} organisations, {len(cfg.vehicles)} vehicles, "
            f"{len(cfg.fences) + len(cfg.fence_files)} fence entries"
        )
        return 0
    if cmd == "decode":
        from ingest.jt808.cli import decode_main

        return decode_main(args.args)
    if cmd == "gateway":
        from ingest.jt808.tcp import gateway_main

        return gateway_main(args.args)
    if cmd == "bench":
        mod = importlib.import_module(BENCHES[args.name])
        result = mod.run(quick=args.quick)
        if args.json:
            _print_json(result)
        else:
            for k, v in result.items():
                print(f"{k}: {v}")
        return 0
    if cmd == "serve":
        from fleetwatch.config import load_config
        from fleetwatch.service import serve_forever

        return serve_forever(load_config(args.config))
    if cmd == "demo":
        from fleetwatch.demo import run_demo

        return run_demo(args)
    if cmd == "simulate":
        return _simulate(args)
    if cmd == "replay":
        from fleetwatch.replay import replay_main

        return replay_main(args)
    raise AssertionError(cmd)


def _simulate(args: argparse.Namespace) -> int:
    from simulator.fleet import FleetSpec

    spec = FleetSpec(
        vehicles=args.vehicles,
        interval_s=args.interval,
        speeding_share=args.speeding_share,
        seed=args.seed,
        center_lat=args.lat,
        center_lon=args.lon,
    )
    if args.write_config:
        from simulator.scenario import demo_config
        from simulator.toml import dumps

        doc = demo_config(spec, mqtt_port=args.port, web_port=8080, db_path="fleetwatch.db")
        with open(args.write_config, "w", encoding="utf-8") as fh:
            fh.write(dumps(doc))
        print(f"wrote {args.write_config}")
        return 0
    from simulator.mqtt import publish_fleet

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def progress(n: int) -> None:
            sys.stderr.write(f"\rpublished {n} messages")

        n = await publish_fleet(
            spec,
            args.host,
            args.port,
            stop=stop,
            speedup=args.speedup,
            qos=args.qos,
            duration_s=args.duration,
            on_progress=progress,
        )
        sys.stderr.write("\n")
        return n

    sent = asyncio.run(go())
    print(f"published {sent} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
