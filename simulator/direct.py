"""The verify run without broker or service: the fleet's reports straight into the rules engine.

Same fleet, same configuration, same fences and the same :class:`RulesEngine`
as the service builds, fed batch by batch with the timer ticked on simulated
time. It checks the scenario and the rules agree in a second, and it is what
the unit tests run; ``simulator.run.verify_run`` is the same check through the
whole pipeline (MQTT, ingest, web API).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.config import parse_config
from simulator.fleet import Fleet, FleetSpec, vehicle_id
from simulator.scenario import fleet_config
from simulator.verify import Raised, Truth, match, order_summary

__all__ = ["verify_direct"]


def verify_direct(
    spec: FleetSpec, start_ms: int, end_ms: int, *, step_ms: int = 30_000
) -> dict[str, Any]:
    """Simulate [start_ms, end_ms) through the rules engine; return :func:`match`'s report."""
    from geofence.geojson import fences_from_config
    from geofence.index import LiveFences
    from rules.engine import RulesEngine

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
