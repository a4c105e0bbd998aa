"""``fleetwatch demo``: the whole product on one machine, nothing else to install.

An embedded MQTT broker (amqtt), the service with SQLite history and in-memory
live state, a simulated fleet around Guang'an (广安) and the web page. It is
the product, not a mock: the same pipeline code as ``fleetwatch serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from fleetwatch.config import Config, parse_config
from fleetwatch.service import run_service
from simulator.broker import embedded_broker
from simulator.fleet import FleetSpec
from simulator.mqtt import publish_fleet
from simulator.scenario import DEMO_DRIVERS, demo_config, demo_orders

__all__ = ["embedded_broker", "run_demo", "seed_demo"]

log = logging.getLogger(__name__)


async def seed_demo(cfg: Config, now_ms: int) -> dict[str, int]:
    """The demo's drivers (only ids not on file) and today's two approved orders (only
    ids not yet there), written to the stores the service then opens — so that the
    demo can dispatch (集中调度) from its first minute."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    from store.orders import OrderStore
    from store.records import create_records
    from store.records_core import DriverRecord

    records = create_records(cfg.store)
    await records.open()
    drivers = 0
    try:
        have = {d.id for d in await records.drivers()}
        for did, name, org, licence, cls, phone in DEMO_DRIVERS:
            if did in have:
                continue
            rec = DriverRecord(
                id=did, name=name, org=org, licence_no=licence, licence_class=cls, phone=phone
            )
            await records.put_driver(rec, by="demo", at=now_ms, action="import")
            drivers += 1
    finally:
        await records.close()
    tz = ZoneInfo(cfg.service.timezone)
    local = dt.datetime.fromtimestamp(now_ms / 1000, tz)
    start = local.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    orders = OrderStore(cfg.store)
    await orders.open()
    added = 0
    try:
        for o in demo_orders(local.date().isoformat(), int(start.timestamp() * 1000)):
            added += int(await orders.add(o))
    finally:
        await orders.close()
    return {"drivers": drivers, "orders": added}


async def demo(args: argparse.Namespace, stop: asyncio.Event) -> None:
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    spec = FleetSpec(vehicles=args.vehicles, speeding_share=args.speeding_share)
    cfg = parse_config(
        demo_config(
            spec, mqtt_port=args.mqtt_port, web_port=args.port, db_path=str(data / "history.db")
        )
    )
    log.info("demo data: %s", await seed_demo(cfg, time.time_ns() // 1_000_000))
    async with embedded_broker(args.mqtt_port):
        started = asyncio.Event()
        service = asyncio.create_task(run_service(cfg, stop, started=started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({service, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if service.done():
            waiter.cancel()
            service.result()  # raises why it could not start
            return
        url = f"http://127.0.0.1:{args.port}/"
        print(
            f"\nFleetWatch demo: open {url} and log in as demo / demo"
            " (a county viewer: wusheng / demo)\n(Ctrl-C stops everything)\n",
            flush=True,
        )
        sim = asyncio.create_task(publish_fleet(spec, "127.0.0.1", args.mqtt_port, stop=stop))
        if args.duration:
            asyncio.get_running_loop().call_later(args.duration, stop.set)
        await service
        await sim


def run_demo(args: argparse.Namespace) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await demo(args, stop)

    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"demo could not start: {exc}", file=sys.stderr)
        return 1
    return 0
