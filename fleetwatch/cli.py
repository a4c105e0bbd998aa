"""The ``fleetwatch`` command line.

Subcommands: ``demo``, ``serve``, ``engine``, ``web``, ``gateway``, ``simulate``, ``decode``,
``bench``,
``check-config``, ``replay``, ``rollup``, ``retention``. Each maps to one function; heavy
imports happen inside them so ``fleetwatch decode`` starts quickly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from fleet.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    import asyncio

    from fleetwatch.config import Config
    from ingest.jt808.session import Provisioning

log = logging.getLogger(__name__)

__all__ = ["main"]

# fleetwatch bench NAME → the module whose run(quick=...) returns the figures.
BENCHES: dict[str, str] = {
    "decode": "ingest.jt808.bench",
    "geofence": "geofence.bench",
    "rules": "rules.bench",
    "store": "store.bench",
    "feed": "stream.bench",
    "notify": "notify.bench",
    "records": "fleetwatch.bench_records",  # engine + feed + records: the whole start-up
    "e2e": "simulator.bench",
    "page": "web.bench",
    "reports": "reports.bench",
    "failover": "fleetwatch.bench_failover",  # kill nodes under load (issue 19)
    "cluster": "fleetwatch.bench_cluster",  # throughput with 1, 2, 4 engine nodes
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

    en = sub.add_parser("engine", help="a cluster engine node: owns partitions through etcd")
    en.add_argument("--config", required=True)
    en.add_argument("--node", default="", help="node name (default: [cluster] node, host-pid)")
    en.add_argument("--http-port", type=int, default=8090, help="/health and /metrics port")

    wn = sub.add_parser("web", help="a cluster web node: page, API and /ws/live from Redis")
    wn.add_argument("--config", required=True)
    wn.add_argument("--port", type=int, default=None, help="default: [web] port")

    c = sub.add_parser("check-config", help="validate a configuration file")
    c.add_argument("file")

    sim = sub.add_parser("simulate", help="publish a simulated fleet; --verify checks alarms")
    from simulator.cli import add_arguments

    add_arguments(sim)

    dec = sub.add_parser("decode", help="decode JT/T 808 frames given as hex ('-' reads stdin)")
    dec.add_argument("args", nargs=argparse.REMAINDER)

    gw = sub.add_parser("gateway", help="JT/T 808 TCP gateway publishing to MQTT")
    gw.add_argument("args", nargs=argparse.REMAINDER)

    b = sub.add_parser("bench", help="run a benchmark: " + ", ".join(BENCHES))
    b.add_argument("name", choices=sorted(BENCHES))
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--quick", action="store_true", help="a smaller, faster run")
    b.add_argument("--faults", default=None, help="failover: comma-separated faults to run")

    ret = sub.add_parser(
        "retention", help="remove what is past its retention now (--dry-run: only say what)"
    )
    ret.add_argument("--config", required=True)
    ret.add_argument("--dry-run", action="store_true", help="remove nothing, say what would go")
    ret.add_argument("--json", action="store_true", help="print one JSON object")

    ru = sub.add_parser(
        "rollup", help="rebuild days of the daily rollup from history (--what-if: a scenario)"
    )
    from fleetwatch.rollup_cli import add_arguments as add_rollup_arguments

    add_rollup_arguments(ru)

    r = sub.add_parser("replay", help="run the rules over stored history and list episodes")
    r.add_argument("--config", required=True)
    r.add_argument("--from", dest="from_", required=True, help="ISO date/time or epoch ms")
    r.add_argument("--to", required=True)
    r.add_argument("--orders", help="dispatch orders CSV (id,vehicle,type,start,end[,...])")
    r.add_argument("--json", action="store_true")
    return p


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # decode and gateway own their options; argparse's REMAINDER cannot pass "--flag" first.
    if argv[:1] == ["decode"]:
        from ingest.jt808.cli import decode_main

        return decode_main(argv[1:])
    if argv[:1] == ["gateway"]:
        return _gateway(argv[1:])
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


def _gateway(argv: list[str]) -> int:
    """``fleetwatch gateway``: the whole configuration file is read here, so that the
    gateway knows the provisioned terminals (the registry's vehicles)."""
    from fleetwatch.config import load_config
    from ingest.jt808.tcp import gateway_main

    async def follow(path: str, provisioning: Any, stop: asyncio.Event) -> Any:
        return await follow_records_of(load_config(path), provisioning, stop)

    try:
        return gateway_main(argv, load_config, follow)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


async def follow_records_of(
    cfg: Config, provisioning: Provisioning, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """``fleetwatch gateway``: with a history store configured, provisioning follows the
    vehicle records (store.records_provisioning), so that a vehicle registered through the
    API may register its terminal. None without a store, or when the records are down."""
    import asyncio

    if cfg.store.kind == "memory":
        return None
    from store.records import RecordStore
    from store.records_provisioning import follow_records

    records = RecordStore(cfg.store)
    try:
        await records.open()
    except ServiceUnavailable as exc:
        log.error("records unavailable; provisioning from the configuration only: %s", exc)
        return None

    async def run() -> None:
        try:
            await follow_records(provisioning, records, cfg.vehicles, stop)
        finally:
            await records.close()

    return asyncio.create_task(run(), name="provisioning-follows-records")


def _gateway_problems(cfg: Any) -> list[str]:
    """check-config: what a production gateway cannot run without (``auth_secret``)."""
    from ingest.jt808.config import gateway_problems

    return gateway_problems(cfg.gateway)


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "check-config":
        from fleetwatch.config import load_config

        cfg = load_config(args.file)
        problems = _gateway_problems(cfg)
        for problem in problems:
            print(f"{args.file}: error: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(
            f"{args.file}: OK — {len(cfg.orgs)} organisations, {len(cfg.vehicles)} vehicles, "
            f"{len(cfg.fences) + len(cfg.fence_files)} fence entries"
        )
        from simulator.cli import demo_secret_warnings

        for warning in demo_secret_warnings(cfg):
            print(f"{args.file}: warning: {warning}", file=sys.stderr)
        return 0
    if cmd == "decode":
        from ingest.jt808.cli import decode_main

        return decode_main(args.args)
    if cmd == "gateway":
        return _gateway(args.args)
    if cmd == "bench":
        mod = importlib.import_module(BENCHES[args.name])
        extra = {"faults": args.faults} if args.faults is not None else {}
        result = mod.run(quick=args.quick, **extra)
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
    if cmd == "engine":
        from fleetwatch.cluster.node import engine_main
        from fleetwatch.config import load_config

        return engine_main(load_config(args.config), args.node, args.http_port)
    if cmd == "web":
        from fleetwatch.config import load_config
        from fleetwatch.service import web_forever

        return web_forever(load_config(args.config), args.port)
    if cmd == "demo":
        from fleetwatch.demo import run_demo

        return run_demo(args)
    if cmd == "simulate":
        return _simulate(args)
    if cmd == "retention":
        return _retention(args)
    if cmd == "rollup":
        from fleetwatch.rollup_cli import rollup_main

        return rollup_main(args)
    if cmd == "replay":
        from fleetwatch.replay import replay_main

        return replay_main(args)
    raise AssertionError(cmd)


def _retention(args: argparse.Namespace) -> int:
    import asyncio

    from fleetwatch.config import load_config
    from store.retention import describe, retention_once

    cfg = load_config(args.config)
    if cfg.store.kind == "memory":
        print("[store] kind = memory: nothing is kept, nothing to remove / 内存存储，无需清理")
        return 0
    removed = asyncio.run(retention_once(cfg, dry_run=args.dry_run))
    if args.json:
        _print_json({"dry_run": args.dry_run, "removed": removed})
    else:
        print(describe(removed, dry_run=args.dry_run))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from simulator.cli import simulate_main

    if not args.verify:
        return simulate_main(args)
    from fleetwatch.verify import verify_run  # the service: only for --verify

    return simulate_main(args, verify_run)


if __name__ == "__main__":
    sys.exit(main())
