"""On a simulated period with injected violations (the simulator's ground truth), the
violations report built from the rollup counts exactly the injected violations per
organisation and kind."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace
from pathlib import Path

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.config import parse_config
from reports.daily import build_day
from reports.service import ReportQuery, report_json
from simulator.fleet import Fleet, vehicle_id
from simulator.run import DEFAULT_SCENARIO, _day_start
from simulator.scenario import fleet_config
from simulator.verify import DEFAULT_DUE_MS, Raised, Truth, match
from store.config import StoreConfig
from store.rollup import rollup_store
from store.sqlite import SQLiteHistory

H = 3_600_000
TZ = "Asia/Shanghai"


async def test_violation_counts_equal_the_injected_truth(tmp_path: Path) -> None:
    from geofence.geojson import fences_from_config
    from geofence.index import LiveFences
    from rules.engine import RulesEngine

    spec = replace(DEFAULT_SCENARIO, vehicles=40)
    days = [dt.date(2026, 11, 24), dt.date(2026, 11, 25)]
    start, end = _day_start(days[0]), _day_start(days[-1]) + 24 * H
    cfg = parse_config(fleet_config(spec))
    reg = Registry.from_config(cfg)
    fences = LiveFences(fences_from_config(cfg.fences, cfg.fence_files, Path.cwd()))
    engine = RulesEngine(
        cfg.rules,
        reg,
        fences=lambda: fences.index,
        timezone=TZ,
        vehicle_state=cfg.vehicle_state,
    )
    history = SQLiteHistory(StoreConfig(kind="sqlite", sqlite_path=str(tmp_path / "h.db")))
    await history.open(reg)
    try:
        fleet = Fleet(spec, start)
        events = []
        filed = 0
        t = start
        while t < end:
            t = min(t + 30_000, end)
            # The simulated orders reach the engine when filed, as in simulator.direct
            # (no_order and the orders' excuses depend on them).
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
                await history.write_positions(batch)
                events += engine.process(batch)
            events += engine.tick(t)
        await history.write_alarm_events(events)
        truth = [
            Truth(v.kind, vehicle_id(v.vehicle), v.start_ms, v.end_ms)
            for v in fleet.violations(until_ms=end)
            if v.start_ms >= start and v.start_ms + DEFAULT_DUE_MS.get(v.kind, 60_000) <= end
        ]
        raised = [
            Raised(e.id, e.kind, e.vehicle_id, e.started_at, e.ts)
            for e in events
            if e.action == "open"
        ]
        score = match(truth, raised, end_ms=end)
        assert score["false_positives"] == score["false_negatives"] == 0, score
        assert len(truth) >= 20  # two days of the default scenario's injections

        rollup = rollup_store(history)
        await rollup.open()
        for d in days:
            await build_day(history, rollup, reg, d, TZ, now_ms=end + H, fences=fences.index)
        want = Counter((reg.org_of(reg.by_id(t.vehicle)), t.kind) for t in truth)  # type: ignore[arg-type]
        root = reg.orgs.ids[0]
        plates = dict(zip(reg.ids, reg.plates, strict=True))
        rep = await report_json(
            rollup,
            reg.orgs,
            plates,
            ReportQuery("violations", root, days[0], days[-1], level="vehicle"),
        )
        got: Counter[tuple[str, str]] = Counter()
        kinds = [c["key"] for c in rep["columns"][1:-2]]
        for row in rep["rows"]:
            for k in kinds:
                if row[k]:
                    got[(row["org"], k)] += row[k]
        assert got == want
        assert rep["totals"]["total"] == len(truth)
        # the list behind the counts holds each of them
        assert Counter((a["org"], a["kind"]) for a in rep["items"]) == want
        # and per organisation at the unit level, the same numbers
        units = await report_json(
            rollup,
            reg.orgs,
            plates,
            ReportQuery("violations", root, days[0], days[-1], level="unit"),
        )
        by_org = Counter()
        for (org, _), n in want.items():
            by_org[org] += n
        for row in units["rows"]:
            inside = {row["org"]} if row.get("own") else reg.orgs.subtree(row["org"])
            assert row["total"] == sum(n for o, n in by_org.items() if o in inside), row
        assert sum(row["total"] for row in units["rows"]) == len(truth)
    finally:
        await history.close()
