"""``fleetwatch simulate --verify``: a simulated day through the real service, then the score.

The service runs in this process with the configuration the scenario writes
(:func:`simulator.scenario.fleet_config`), on the broker given. The day runs
``speedup`` times faster than the wall clock, so the service's timer (the
offline rule's ``now``) is given the simulated clock: the time up to which the
simulator has published. Alarms are read back from the HTTP API
(``/api/alarms`` with the scenario's token) and from the live feed (when each
was first seen, for the delay), then matched with the ground truth
(:func:`simulator.verify.match`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import websockets

from simulator.fleet import TZ_OFFSET_MS, Fleet, FleetSpec, is_workday, vehicle_id
from simulator.mqtt import publish_fleet
from simulator.plan import DAY
from simulator.scenario import fleet_config
from simulator.suppliers import verify_costs
from simulator.verify import Raised, Truth, match, order_summary

__all__ = ["DEFAULT_SCENARIO", "VerifyOptions", "default_day", "verify_run"]

# The default scenario: 40 vehicles, two of each violation, a few blind areas.
DEFAULT_SCENARIO = FleetSpec(
    vehicles=40,
    schedule="office",
    speeding_share=0.05,
    off_hours_share=0.05,
    out_of_area_share=0.05,
    forbidden_share=0.05,
    no_return_share=0.05,
    offline_share=0.05,
    sos_share=0.05,
    signal_loss_share=0.1,
    ordered_orgs=2,
    order_missing_share=0.025,
    order_rejected_share=0.025,
    order_approved_share=0.025,
    order_late_share=0.025,
    order_wrong_city_share=0.025,
)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    protocol: Literal["json", "jt808"] = "json"
    speedup: float = 600.0
    day: dt.date | None = None  # None: the most recent past workday
    from_hour: float = 0.0  # simulate [day + from_hour, day + to_hour) local time
    to_hour: float = 24.0
    qos: int = 0
    topic_prefix: str | None = None  # None: a unique one
    data_dir: str | None = None  # None: a temporary directory


def default_day(today: dt.date) -> dt.date:
    """The most recent workday before ``today`` (a whole simulated day lies in the past)."""
    d = today - dt.timedelta(days=1)
    while not is_workday(_day_start(d)):
        d -= dt.timedelta(days=1)
    return d


def _day_start(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days * DAY - TZ_OFFSET_MS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _watch_feed(url: str, seen: dict[str, int], sim_clock: Callable[[], int]) -> None:
    """Record the simulated time at which each alarm episode was first pushed on the feed."""
    async with websockets.connect(url, max_size=None) as ws:
        async for raw in ws:
            frame = orjson.loads(raw)
            if frame.get("type") == "alarm":
                seen.setdefault(frame["alarm"]["id"], sim_clock())


async def verify_run(
    spec: FleetSpec = DEFAULT_SCENARIO,
    opts: VerifyOptions = VerifyOptions(),
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the scenario through the service; return the score (see :func:`match`)."""
    from fleetwatch.config import parse_config
    from fleetwatch.service import build_service, run_service

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
            await asyncio.wait_for(svc.ingest.connected.wait(), 30)
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
                await asyncio.wait_for(service, 30)
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


def scenario_spec(vehicles: int, seed: int, **shares: float) -> FleetSpec:
    """The default scenario resized: ``vehicles`` vehicles, the same shares unless given."""
    return replace(DEFAULT_SCENARIO, vehicles=vehicles, seed=seed, **shares)  # type: ignore[arg-type]
