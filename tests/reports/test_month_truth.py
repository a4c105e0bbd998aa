"""A whole simulated month (2026-11, a small fleet): the violations and coverage reports
built from the day-by-day rollup equal the simulator's ground truth exactly — the
injected violations per unit × kind (month and every day), the orders it filed
(approved, rejected, missing, late 补单) and the trips they leave without an order.

The simulator does not expose its planned trips in the rollup's sense (a planned
out-and-back trip with a stay is two moving runs to the rollup), so the use report's
trip counts are not checked against it here."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fleet.batch import PositionBatch
from fleet.registry import Registry
from fleetwatch.config import parse_config
from reports.daily import ORDER_STATES_IN_FORCE, build_day, local_day
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
FIRST, LAST = dt.date(2026, 11, 1), dt.date(2026, 11, 30)
VEHICLES = 16
STEP_MS = 300_000  # the simulator's own stepping, coarse (5 min)
WRITE_EVERY = 12  # steps per history write (an hour of positions per batch)


def _batch(cols: list[dict[str, Any]]) -> PositionBatch:
    c = {k: np.concatenate([x[k] for x in cols]) for k in cols[0]}
    return PositionBatch.from_columns(
        vehicle=c["vehicle"],
        ts=c["ts"],
        lat=c["lat"],
        lon=c["lon"],
        speed=c["speed"],
        heading=c["heading"],
        alt=c["alt"],
        acc=c["acc"],
        alarm_bits=c["alarm"],
        status_bits=c["status"],
        mileage=c["mileage"],
        backfill=c["backfill"],
    )


async def test_a_month_of_reports_equals_the_simulated_truth(tmp_path: Path) -> None:
    from geofence.geojson import fences_from_config
    from geofence.index import LiveFences
    from rules.engine import RulesEngine

    t_begin = time.monotonic()
    spec = replace(DEFAULT_SCENARIO, vehicles=VEHICLES)
    days = [FIRST + dt.timedelta(days=k) for k in range((LAST - FIRST).days + 1)]
    start, end = _day_start(days[0]), _day_start(days[-1]) + 24 * H
    cfg = parse_config(fleet_config(spec))
    reg = Registry.from_config(cfg)
    fences = LiveFences(fences_from_config(cfg.fences, cfg.fence_files, Path.cwd()))
    engine = RulesEngine(
        cfg.rules, reg, fences=lambda: fences.index, timezone=TZ, vehicle_state=cfg.vehicle_state
    )
    history = SQLiteHistory(StoreConfig(kind="sqlite", sqlite_path=str(tmp_path / "h.db")))
    await history.open(reg)
    try:
        fleet = Fleet(spec, start)
        events = []
        filed = 0
        pending: list[dict[str, Any]] = []
        t, steps = start, 0
        while t < end:
            t = min(t + STEP_MS, end)
            orders = fleet.orders(until_ms=t)
            for o in orders[filed:]:
                events += engine.add_order(o.dispatch_order())
            filed = len(orders)
            cols = fleet.step(t)
            if len(cols["ts"]):
                pending.append(cols)
                events += engine.process(_batch([cols]))
            events += engine.tick(t)
            steps += 1
            if pending and (steps % WRITE_EVERY == 0 or t >= end):
                await history.write_positions(_batch(pending))
                pending = []
        await history.write_alarm_events(events)
        t_sim = time.monotonic() - t_begin

        # -- the simulator's truth, and the engine's episodes matched one to one with it
        truth = [
            Truth(v.kind, vehicle_id(v.vehicle), v.start_ms, v.end_ms)
            for v in fleet.violations(until_ms=end)
            if v.start_ms >= start and v.start_ms + DEFAULT_DUE_MS.get(v.kind, 60_000) <= end
        ]
        opened = [e for e in events if e.action == "open"]
        raised = [Raised(e.id, e.kind, e.vehicle_id, e.started_at, e.ts) for e in opened]
        score = match(truth, raised, end_ms=end)
        assert score["false_positives"] == score["false_negatives"] == 0, [
            (k, u) for k, v in score["kinds"].items() for u in v["unexplained"]
        ]
        kinds_seen = {x.kind for x in truth}
        assert {"no_order", "off_hours", "speeding", "parking_violation"} <= kinds_seen, kinds_seen
        assert len(truth) >= 100  # a month of the default scenario's injections

        planned = fleet.orders()
        states = Counter(o.state for o in planned)
        assert states["rejected"] > 0 and sum(o.filed_ms > o.end for o in planned) > 0, states
        order_dicts = [
            {
                "vehicle": vehicle_id(o.vehicle),
                "start": o.start,
                "end": o.end,
                "state": o.state,
            }
            for o in planned
        ]

        # -- the rollup, day by day
        rollup = rollup_store(history)
        await rollup.open()
        for d in days:
            await build_day(
                history,
                rollup,
                reg,
                d,
                TZ,
                now_ms=end + H,
                fences=fences.index,
                orders=order_dicts,
            )
        t_rollup = time.monotonic() - t_begin - t_sim

        root = reg.orgs.ids[0]
        plates = dict(zip(reg.ids, reg.plates, strict=True))
        org_of = {vid: reg.org_of(i) for i, vid in enumerate(reg.ids)}

        async def report(name: str, a: dt.date, b: dt.date, level: str) -> dict[str, Any]:
            q = ReportQuery(name, root, a, b, level=level, items_limit=100_000)
            return await report_json(rollup, reg.orgs, plates, q)

        # -- violations: the month, per vehicle's unit × kind, and per month bucket
        want = Counter((org_of[x.vehicle], x.kind) for x in truth)
        rep = await report("violations", days[0], days[-1], "vehicle")
        kinds = [c["key"] for c in rep["columns"][1:-2]]
        got: Counter[tuple[str, str]] = Counter()
        for row in rep["rows"]:
            for k in kinds:
                if row[k]:
                    got[(row["org"], k)] += row[k]
        assert got == want
        assert rep["totals"]["total"] == len(truth)
        assert Counter((a["org"], a["kind"]) for a in rep["items"]) == want
        assert not rep["items_truncated"]
        by_month: Counter[tuple[str, str]] = Counter()
        for g in rep["by_month"]:
            assert g["month"] == "2026-11", g
            by_month[(org_of[g["vehicle"]], g["kind"])] += g["n"]
        assert by_month == want

        # -- violations: every day, against the matched episodes' own days
        per_day = Counter(
            (local_day(e.started_at, TZ), org_of[e.vehicle_id], e.kind) for e in opened
        )
        for d in days:
            drep = await report("violations", d, d, "vehicle")
            dgot = Counter((d, a["org"], a["kind"]) for a in drep["items"])
            dwant = Counter({k: n for k, n in per_day.items() if k[0] == d})
            assert dgot == dwant, d
            assert drep["totals"]["total"] == sum(dwant.values()), d
        assert sum(per_day.values()) == len(truth)

        # -- coverage: orders per unit, and which vehicle-days have trips left uncovered
        in_force = [o for o in planned if o.state in ORDER_STATES_IN_FORCE]
        want_orders: Counter[str] = Counter()
        for d in days:
            a, b = _day_start(d), _day_start(d) + 24 * H
            for o in in_force:
                if o.end >= a and o.start < b:
                    want_orders[vehicle_id(o.vehicle)] += 1
        ordered = set(fleet.ordered_orgs())
        uncovered_days: set[tuple[str, dt.date]] = set()
        for d in days:
            for i, what in fleet.assignments(_day_start(d)).items():
                if what in ("order_missing", "order_rejected"):
                    uncovered_days.add((vehicle_id(i), d))
        assert uncovered_days
        month_cov = await report("coverage", days[0], days[-1], "vehicle")
        for row in month_cov["rows"]:
            vid = row["vehicle"] if "vehicle" in row else row["vehicle_id"]
            assert row["orders"] == want_orders[vid], row
            if org_of[vid] not in ordered:
                assert row["trips_covered"] == 0, row
        for d in days:
            cov = await report("coverage", d, d, "vehicle")
            for row in cov["rows"]:
                vid = row["vehicle"] if "vehicle" in row else row["vehicle_id"]
                if org_of[vid] not in ordered or not row["trips"]:
                    continue
                left = row["trips_uncovered"] > 0
                assert left == ((vid, d) in uncovered_days), (d, row)
        t_total = time.monotonic() - t_begin
        print(f"simulate {t_sim:.1f}s, rollup {t_rollup:.1f}s, total {t_total:.1f}s")
    finally:
        await history.close()
