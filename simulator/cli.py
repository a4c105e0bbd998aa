"""``fleetwatch simulate``: publish a simulated fleet, write its configuration, or verify.

::

    fleetwatch simulate --vehicles 200                       # JSON over MQTT, real time
    fleetwatch simulate --protocol jt808 --speedup 60        # JT/T 808 frames, an hour a minute
    fleetwatch simulate --scenario office --write-config sim.toml
    fleetwatch simulate --verify [--speedup 600] [--day 2026-11-24]   # score FleetWatch
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
from dataclasses import replace

from simulator.fleet import FleetSpec

__all__ = ["add_arguments", "simulate_main"]


def add_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=1883)
    sim.add_argument("--vehicles", type=int, default=None, help="default 200 (40 with --verify)")
    sim.add_argument("--interval", type=float, default=10.0, help="report interval moving, s")
    sim.add_argument("--parked-interval", type=float, default=60.0, help="report interval parked")
    sim.add_argument("--speeding-share", type=float, default=0.05)
    sim.add_argument("--speedup", type=float, default=None, help="simulated time per wall time")
    sim.add_argument("--duration", type=float, default=None, help="stop after N wall seconds")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--qos", type=int, choices=(0, 1), default=0)
    sim.add_argument("--lat", type=float, default=30.456)
    sim.add_argument("--lon", type=float, default=106.633)
    sim.add_argument("--protocol", choices=("json", "jt808"), default="json")
    sim.add_argument("--max-rate", type=float, default=None, help="messages per second at most")
    sim.add_argument(
        "--scenario",
        choices=("always", "office"),
        default=None,
        help="always: trips round the clock (the demo); office: working days with injected "
        "violations (the default with --verify)",
    )
    sim.add_argument("--day", default=None, help="YYYY-MM-DD simulated with --verify")
    sim.add_argument(
        "--verify",
        action="store_true",
        help="run the scenario through an in-process service and score its alarms",
    )
    sim.add_argument("--json", action="store_true", help="with --verify: print the report")
    sim.add_argument(
        "--write-config",
        metavar="FILE",
        help="write a matching configuration (orgs, vehicles, fences, rules) and exit",
    )


def _spec(args: argparse.Namespace) -> FleetSpec:
    from simulator.run import DEFAULT_SCENARIO

    office = args.verify or args.scenario == "office"
    base = DEFAULT_SCENARIO if office else FleetSpec()
    return replace(
        base,
        vehicles=args.vehicles or (DEFAULT_SCENARIO.vehicles if args.verify else 200),
        interval_s=args.interval,
        parked_interval_s=args.parked_interval,
        speeding_share=args.speeding_share,
        seed=args.seed,
        center_lat=args.lat,
        center_lon=args.lon,
    )


def _print_report(rep: dict[str, object]) -> None:
    run = rep["run"]
    print(f"verify: {run}")
    kinds = rep["kinds"]
    assert isinstance(kinds, dict)
    print(f"{'kind':<18}{'injected':>9}{'raised':>8}{'prec':>7}{'recall':>8}{'delay p50':>11}")
    for k, s in kinds.items():
        print(
            f"{k:<18}{s['injected']:>9}{s['raised']:>8}{s['precision']:>7.2f}{s['recall']:>8.2f}"
            f"{s['delay_s_p50'] if s['delay_s_p50'] is not None else '-':>11}"
        )
    print(f"precision {rep['precision']}, recall {rep['recall']}")


def simulate_main(args: argparse.Namespace) -> int:
    spec = _spec(args)
    if args.write_config:
        from simulator.scenario import fleet_config
        from simulator.toml import dumps

        doc = fleet_config(spec, mqtt_host=args.host, mqtt_port=args.port)
        with open(args.write_config, "w", encoding="utf-8") as fh:
            fh.write(dumps(doc))
        print(f"wrote {args.write_config}")
        return 0
    if args.verify:
        from simulator.run import VerifyOptions, verify_run

        opts = VerifyOptions(
            host=args.host,
            port=args.port,
            protocol=args.protocol,
            speedup=args.speedup or 600.0,
            day=dt.date.fromisoformat(args.day) if args.day else None,
            qos=args.qos,
        )

        def progress(now: int, sent: int) -> None:
            clock = dt.datetime.fromtimestamp(now / 1000, dt.timezone(dt.timedelta(hours=8)))
            sys.stderr.write(f"\r{clock:%Y-%m-%d %H:%M} published {sent}")

        rep = asyncio.run(verify_run(spec, opts, on_progress=progress))
        sys.stderr.write("\n")
        if args.json:
            print(json.dumps(rep, ensure_ascii=False))
        else:
            _print_report(rep)
        return 0 if rep["precision"] == 1.0 and rep["recall"] == 1.0 else 1

    from simulator.mqtt import publish_fleet

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def progress(n: int) -> None:
            sys.stderr.write(f"\rpublished {n} messages")

        n = await publish_fleet(
            spec,
            args.host,
            args.port,
            stop=stop,
            speedup=args.speedup or 1.0,
            qos=args.qos,
            duration_s=args.duration,
            on_progress=progress,
            protocol=args.protocol,
            max_rate=args.max_rate,
        )
        sys.stderr.write("\n")
        return n

    sent = asyncio.run(go())
    print(f"published {sent} messages")
    return 0
