"""``fleetwatch simulate``: publish a simulated fleet, write its configuration, or verify.

::

    fleetwatch simulate --vehicles 200                       # JSON over MQTT, real time
    fleetwatch simulate --protocol jt808 --speedup 60        # JT/T 808 frames, an hour a minute
    fleetwatch simulate --transport tcp --gateway 127.0.0.1:6808   # terminals of the gateway
    fleetwatch simulate --scenario office --write-config sim.toml
    fleetwatch simulate --verify [--speedup 600] [--day 2026-11-24]   # score FleetWatch

A simulator never publishes to a broker nobody named: a plain ``simulate`` needs
``--host`` and ``--port``; ``--verify`` runs on its own embedded broker (amqtt, on a
free port) unless both are given. ``--write-config`` writes generated secrets: a
random token, and the demo's users with random passwords (stored as argon2
hashes, printed once).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import signal
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from simulator.fleet import FleetSpec

if TYPE_CHECKING:
    from simulator.run import VerifyRun

__all__ = ["add_arguments", "demo_secret_warnings", "simulate_main"]

#: Shortest plain password ``check-config`` accepts without a warning (plain passwords in a
#: configuration are meant for demos; a service should hold argon2 hashes).
MIN_PASSWORD_CHARS = 12
MIN_TOKEN_CHARS = 16


def add_arguments(sim: argparse.ArgumentParser) -> None:
    sim.add_argument(
        "--host", default=None, help="MQTT broker host (required unless --verify/--write-config)"
    )
    sim.add_argument(
        "--port", type=int, default=None, help="MQTT broker port (required like --host)"
    )
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
    sim.add_argument(
        "--protocol",
        choices=("json", "jt808"),
        default=None,
        help="payload format: json (default over MQTT) or jt808 (the only one over TCP)",
    )
    sim.add_argument(
        "--transport",
        choices=("mqtt", "tcp"),
        default="mqtt",
        help="mqtt: publish to the broker; tcp: each vehicle a JT/T 808 terminal connected "
        "to the gateway (fleetwatch gateway)",
    )
    sim.add_argument(
        "--gateway", default="127.0.0.1:6808", metavar="HOST:PORT", help="with --transport tcp"
    )
    sim.add_argument(
        "--heartbeat", type=float, default=60.0, help="terminal heartbeat interval, wall s (tcp)"
    )
    sim.add_argument(
        "--jt808-version",
        type=int,
        choices=(2011, 2013, 2019),
        default=2013,
        help="JT/T 808 edition the terminals speak (tcp)",
    )
    sim.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="publish to p{k}/ topics for a cluster of that many partitions ([cluster])",
    )
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
    sim.add_argument(
        "--json",
        action="store_true",
        help="with --verify: print the report; with --transport tcp: print the counters",
    )
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
    if rep.get("orders"):
        print(f"orders: {rep['orders']}")
    print(f"precision {rep['precision']}, recall {rep['recall']}")
    from simulator.suppliers import print_costs  # the cost checks (#18)

    print_costs(rep.get("costs"))  # type: ignore[arg-type]


def _protocol(args: argparse.Namespace) -> Literal["json", "jt808"] | None:
    """The payload format for the transport, or None (after saying why) if they do not fit."""
    if args.transport == "tcp":
        if args.protocol == "json":
            print("--transport tcp speaks JT/T 808: drop --protocol json", file=sys.stderr)
            return None
        if args.verify:
            print("--verify publishes over MQTT: drop --transport tcp", file=sys.stderr)
            return None
        return "jt808"
    return "jt808" if args.protocol == "jt808" else "json"


def _simulate_tcp(args: argparse.Namespace, spec: FleetSpec) -> int:
    from fleet.errors import Misuse, ServiceUnavailable
    from simulator.tcp import TcpOptions, TerminalStats, parse_hostport, run_fleet_tcp

    try:
        host, port = parse_hostport(args.gateway)
        opts = TcpOptions(
            host=host, port=port, heartbeat_s=args.heartbeat, version=args.jt808_version
        )
    except Misuse as exc:
        print(f"--gateway/--heartbeat: {exc}", file=sys.stderr)
        return 2
    stats = TerminalStats()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        shown = [0.0]

        def progress(n: int) -> None:
            if time.monotonic() - shown[0] < 0.5:
                return
            shown[0] = time.monotonic()
            sys.stderr.write(
                f"\r{n} reports, {stats.frames} frames, {stats.acked} acknowledged, "
                f"{stats.authenticated}/{stats.terminals} terminals online"
            )

        await run_fleet_tcp(
            spec,
            opts,
            stop=stop,
            speedup=args.speedup or 1.0,
            duration_s=args.duration,
            max_rate=args.max_rate,
            on_progress=progress,
            stats=stats,
        )
        sys.stderr.write("\n")

    try:
        asyncio.run(go())
    except ServiceUnavailable as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    summary = stats.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{stats.terminals} terminals sent {stats.frames} frames ({stats.positions} positions, "
            f"{stats.backfill_positions} back-filled, {stats.heartbeats} heartbeats): "
            f"{stats.acked} acknowledged, {stats.refused} refused, {stats.late} late, "
            f"{stats.unacknowledged} unacknowledged, {stats.failed} terminals failed to log in"
        )
    ok = stats.failed == stats.refused == stats.unacknowledged == stats.dropped == 0
    return 0 if ok else 1


def simulate_main(args: argparse.Namespace, verify_run: VerifyRun | None = None) -> int:
    """``fleetwatch simulate``; ``verify_run`` (given by the root: ``fleetwatch.verify``)
    runs ``--verify``."""
    spec = _spec(args)
    protocol = _protocol(args)
    if protocol is None:
        return 2
    if args.write_config:
        return _write_config(args, spec)
    named = args.host is not None and args.port is not None
    if (args.host is None) != (args.port is None):
        print("give both --host and --port (or neither, with --verify)", file=sys.stderr)
        return 2
    if args.verify:
        from simulator.run import VerifyOptions

        if verify_run is None:
            raise RuntimeError(
                "simulate --verify needs the service (run it as `fleetwatch simulate`)"
            )

        embedded = not named
        host = "127.0.0.1" if embedded else args.host
        port = _free_port() if embedded else args.port
        where = "its own embedded broker" if embedded else "the broker named"
        print(f"verify: publishing to mqtt://{host}:{port} ({where})", file=sys.stderr)
        opts = VerifyOptions(
            host=host,
            port=port,
            protocol=protocol,
            speedup=args.speedup or 600.0,
            day=dt.date.fromisoformat(args.day) if args.day else None,
            qos=args.qos,
        )

        def progress(now: int, sent: int) -> None:
            clock = dt.datetime.fromtimestamp(now / 1000, dt.timezone(dt.timedelta(hours=8)))
            sys.stderr.write(f"\r{clock:%Y-%m-%d %H:%M} published {sent}")

        async def run_verify() -> dict[str, object]:
            if not embedded:
                return await verify_run(spec, opts, on_progress=progress)
            import logging

            from simulator.broker import embedded_broker

            for name in ("amqtt", "transitions"):  # the broker's state machine chatter
                logging.getLogger(name).setLevel(logging.WARNING)
            async with embedded_broker(port):
                return await verify_run(spec, opts, on_progress=progress)

        rep = asyncio.run(run_verify())
        sys.stderr.write("\n")
        if args.json:
            print(json.dumps(rep, ensure_ascii=False))
        else:
            _print_report(rep)
        costs_ok = bool((rep.get("costs") or {}).get("all_found", True))  # type: ignore[attr-defined]
        return 0 if rep["precision"] == 1.0 and rep["recall"] == 1.0 and costs_ok else 1

    if args.transport == "tcp":
        return _simulate_tcp(args, spec)
    if not named:
        print(
            "fleetwatch simulate publishes positions to a real MQTT broker: name it with"
            " --host and --port (e.g. --host 127.0.0.1 --port 1883). `fleetwatch demo` runs"
            " its own broker; `simulate --verify` too.\n"
            "fleetwatch simulate 会向真实的 MQTT 服务器发布位置：请用 --host 和 --port 指明。",
            file=sys.stderr,
        )
        return 2
    print(f"publishing to mqtt://{args.host}:{args.port}", file=sys.stderr)

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
            protocol=protocol,
            max_rate=args.max_rate,
            partitions=args.partitions,
        )
        sys.stderr.write("\n")
        return n

    sent = asyncio.run(go())
    print(f"published {sent} messages")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_config(args: argparse.Namespace, spec: FleetSpec) -> int:
    """Write the simulated city's configuration with fresh secrets; print the passwords once."""
    import secrets

    from simulator.scenario import fleet_config
    from simulator.toml import dumps
    from web.auth import hash_password

    doc = fleet_config(
        spec,
        mqtt_host=args.host or "127.0.0.1",
        mqtt_port=args.port or 1883,
        token=secrets.token_urlsafe(24),
    )
    passwords = {}
    for user in doc["web"]["users"]:
        pw = secrets.token_urlsafe(12)
        passwords[user["username"]] = pw
        user["password"] = hash_password(pw)
    with open(args.write_config, "w", encoding="utf-8") as fh:
        fh.write(dumps(doc))
    print(f"wrote {args.write_config} (a random token, users with argon2-hashed passwords)")
    print("passwords, shown only now / 密码仅显示一次:")
    for name, pw in passwords.items():
        print(f"  {name}: {pw}")
    return 0


def demo_secret_warnings(cfg: object) -> list[str]:
    """``check-config``: secrets in ``cfg`` that belong to a demo, not to a service.

    The demo's well-known token, tokens shorter than :data:`MIN_TOKEN_CHARS`, and
    plain-text passwords (a service's configuration holds argon2 hashes) — above
    all short ones.
    """
    from simulator.scenario import DEMO_TOKEN

    web = getattr(cfg, "web", None)
    out: list[str] = []
    for t in getattr(web, "tokens", ()):
        if t.token == DEMO_TOKEN:
            out.append(f"web.tokens: {t.name or t.org!r} uses the demo's well-known token")
        elif len(t.token) < MIN_TOKEN_CHARS:
            out.append(
                f"web.tokens: {t.name or t.org!r} is shorter than {MIN_TOKEN_CHARS} characters"
            )
    for u in getattr(web, "users", ()):
        if u.password.startswith("$argon2"):
            continue
        if len(u.password) < MIN_PASSWORD_CHARS:
            out.append(
                f"web.users: {u.username!r} has a plain password shorter than"
                f" {MIN_PASSWORD_CHARS} characters"
            )
        else:
            out.append(f"web.users: {u.username!r} has a plain password (store an argon2 hash)")
    return out
