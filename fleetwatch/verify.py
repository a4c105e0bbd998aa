"""``fleetwatch simulate --verify``: a simulated day through the real service, then the score.

The simulator (``simulator/``) makes the fleet, its ground truth and the scenario's
configuration; this module, in the composition root, drives the service with it
(:func:`verify_run`: MQTT, ingest, rules, stores, web API, the live feed) or the rules
engine alone (:func:`verify_direct`, in a second: what the unit tests run), and scores
the alarms with :func:`simulator.verify.match`. Only the root builds the service, so the
simulator package stays below it (the import-linter contracts, no exceptions).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fleet import aio
from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.config import parse_config
from fleetwatch.service import build_service, run_service
from geofence.geojson import fences_from_config
from geofence.index import LiveFences
from rules.engine import RulesEngine
from simulator.fleet import Fleet, FleetSpec, vehicle_id
from simulator.mqtt import publish_fleet
from simulator.run import (
    DEFAULT_SCENARIO,
    VerifyOptions,
    _day_start,
    _free_port,
    _watch_feed,
    default_day,
)
from simulator.scenario import fleet_config
from simulator.suppliers import verify_costs
from simulator.verify import Raised, Truth, match, order_summary

__all__ = ["verify_direct", "verify_run"]

_DEFAULT_OPTIONS = VerifyOptions()


async def verify_run(
    spec: FleetSpec = DEFAULT_SCENARIO,
    opts: VerifyOptions = _DEFAULT_OPTIONS,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the scenario through the service; return the score (see :func:`match`)."""
    day = opts.day or default_day(dt.datetime.now(dt.UTC).date())
    start_ms = _day_start(day) + round(opts.from_hour * 3_600_000)
    end_ms = _day_start(day) + round(opts.to_hour * 3_600_000)
    if end_ms > time.time() * 1000:
        raise ValueError(f"the simulated day {day} must lie in the past")
    prefix = opts.topic_prefix if opts.topic_prefix is not None else f"sim{uuid.uuid4().hex[:8]}/"
    web_port = _free_port()
    token = f"verify-{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        data = opts.data_dir or stack.enter_context(tempfile.TemporaryDirectory())
        doc = fleet_config(
            spec,
            mqtt_host=opts.host,
            mqtt_port=opts.port,
            web_port=web_port,
            db_path=str(Path(data) / "history.db"),
            token=token,
            topic_prefix=prefix,
            client_id=f"fw-verify-{uuid.uuid4().hex[:8]}",
        )
        doc["store"]["sqlite_synchronous"] = "NORMAL"
        doc["ingest"] = {"batch_max_age_ms": 20}
        cfg = parse_config(doc)
        fleet = Fleet(spec, start_ms)
        sim = {"now": start_ms}

        def sim_clock() -> int:
            return int(sim["now"])

        svc = build_service(cfg)
        # The timer rules run on simulated time, and often enough for an accelerated day.
        svc.pipeline.clock = lambda: sim["now"] / 1000.0
        svc.pipeline.tick_s = 0.1
        stop = asyncio.Event()
        started = asyncio.Event()
        service = asyncio.create_task(run_service(cfg, stop, started=started, service=svc))
        seen: dict[str, int] = {}
        watcher: asyncio.Task[None] | None = None
        try:
            ready = asyncio.create_task(started.wait())
            await asyncio.wait({ready, service}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if service.done():
                service.result()  # raises why the service could not start
            await aio.wait_for(svc.ingest.connected.wait(), 30)
            watcher = asyncio.create_task(
                _watch_feed(f"ws://127.0.0.1:{web_port}/ws/live?token={token}", seen, sim_clock)
            )
            await asyncio.sleep(0.3)

            filed = [0]
            pending: set[asyncio.Task[None]] = set()

            def on_step(now: int, sent: int) -> None:
                sim["now"] = now
                # Orders reach the engine when filed (a 补单 after its trip); what they
                # cover after the fact goes out like the engine's own events.
                orders = fleet.orders(until_ms=now)
                events = []
                for o in orders[filed[0] :]:
                    events += svc.engine.add_order(o.dispatch_order())
                filed[0] = len(orders)
                if events:
                    task = asyncio.ensure_future(svc.pipeline.inject_events(events))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if on_progress is not None:
                    on_progress(now, sent)

            t0 = time.monotonic()
            sent = await publish_fleet(
                spec,
                opts.host,
                opts.port,
                stop=asyncio.Event(),
                speedup=opts.speedup,
                qos=opts.qos,
                protocol=opts.protocol,
                topic_prefix=prefix,
                start_ms=start_ms,
                end_ms=end_ms,
                fleet=fleet,
                on_step=on_step,
            )
            wall = time.monotonic() - t0
            on_step(end_ms, sent)  # the orders filed by the end of the run
            # Let the last batches through the pipeline before reading the alarms.
            await asyncio.sleep(1.0)
            if pending:
                await asyncio.wait(pending, timeout=10)
            await asyncio.sleep(0.5)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}") as http:
                alarms = []
                page = 1
                while True:  # every page of the alarm history
                    r = await http.get(
                        "/api/alarms",
                        params={"page": page, "page_size": 500},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    r.raise_for_status()
                    body = r.json()
                    alarms += body["alarms"]
                    if not body["alarms"] or len(alarms) >= body["total"]:
                        break
                    page += 1
                ids = [vehicle_id(i) for i in range(spec.vehicles)]  # #18: supplier files, scored
                costs = await verify_costs(
                    http, token, svc.records, svc.history, ids, day, start_ms, end_ms
                )
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            stop.set()
            if not service.done():
                await aio.wait_for(service, 30)
    truth = [
        Truth(v.kind, vehicle_id(v.vehicle), v.start_ms, v.end_ms, v.detail.get("covered"))
        for v in fleet.violations(until_ms=end_ms)
        if v.start_ms >= start_ms
    ]
    raised = [
        Raised(
            a["id"],
            a["kind"],
            a.get("vehicle_id") or a.get("vehicle"),
            int(a["started_at"]),
            seen.get(a["id"]),
            bool(a.get("covered")),
        )
        for a in alarms
    ]
    report = match(truth, raised, end_ms=end_ms)
    report["orders"] = order_summary(fleet.orders(until_ms=end_ms))
    report["costs"] = costs
    report["run"] = {
        "day": day.isoformat(),
        "from_ms": start_ms,
        "to_ms": end_ms,
        "vehicles": spec.vehicles,
        "protocol": opts.protocol,
        "speedup": opts.speedup,
        "messages": sent,
        "positions_processed": svc.pipeline.positions_processed,
        "wall_s": round(wall, 1),
        "rejected": dict(svc.ingest.core.rejected),
    }
    return report


def verify_direct(
    spec: FleetSpec, start_ms: int, end_ms: int, *, step_ms: int = 30_000
) -> dict[str, Any]:
    """Simulate [start_ms, end_ms) through the rules engine; return :func:`match`'s report."""
    cfg = parse_config(fleet_config(spec))
    registry = Registry.from_config(cfg)
    fences = LiveFences(fences_from_config(cfg.fences, cfg.fence_files, Path.cwd()))
    engine = RulesEngine(
        cfg.rules,
        registry,
        fences=lambda: fences.index,
        timezone=cfg.service.timezone,
        vehicle_state=cfg.vehicle_state,
    )
    fleet = Fleet(spec, start_ms)
    events = []
    filed = 0
    t = start_ms
    while t < end_ms:
        t = min(t + step_ms, end_ms)
        # Orders reach the engine when they are filed (a 补单 after its trip).
        orders = fleet.orders(until_ms=t)
        for o in orders[filed:]:
            events += engine.add_order(o.dispatch_order())
        filed = len(orders)
        cols = fleet.step(t)
        if len(cols["ts"]):
            batch = PositionBatch.from_columns(
                vehicle=cols["vehicle"],
                ts=cols["ts"],
                lat=cols["lat"],
                lon=cols["lon"],
                speed=cols["speed"],
                heading=cols["heading"],
                alt=cols["alt"],
                acc=cols["acc"],
                alarm_bits=cols["alarm"],
                status_bits=cols["status"],
                mileage=cols["mileage"],
                backfill=cols["backfill"],
            )
            events += engine.process(batch)
        events += engine.tick(t)
    covered = {e.id: e.covered for e in events}  # the last word on each episode
    raised = [
        Raised(e.id, e.kind, e.vehicle_id, e.started_at, e.ts, covered[e.id])
        for e in events
        if e.action == "open"
    ]
    truth = [
        Truth(v.kind, vehicle_id(v.vehicle), v.start_ms, v.end_ms, v.detail.get("covered"))
        for v in fleet.violations(until_ms=end_ms)
        if v.start_ms >= start_ms
    ]
    report = match(truth, raised, end_ms=end_ms)
    report["orders"] = order_summary(fleet.orders(until_ms=end_ms))
    return report
