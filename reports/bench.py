"""``fleetwatch bench reports``: the nightly rollup, month reports and the XLSX on PostgreSQL.

A generated history in a private schema of the configured database (dropped afterwards):
``vehicles`` vehicles (city → 10 counties → 10 units each) over ``days`` days. The
position rate is reduced to what the rollup's figures need: per vehicle-day an hourly
heartbeat (ACC off, 24 points) and two trips of 30 points one minute apart (84 points;
a real terminal reports every 10-30 s while driving — the rollup's cost is linear in
points, so scale the day's time accordingly). Positions go in through the history
store's own writer (binary COPY), one day per batch. Alarm episodes: ~7 % of
vehicle-days, half acknowledged. Orders: 30 % of vehicle-days.

Measured (medians of ``repeats``):

- ``rollup_day_s``: :func:`reports.daily.build_day` of one closed day (every day is
  rolled up once; the median over the days, and the resident set after the first and the
  last day and its largest value: memory must not grow with the number of days);
- ``violations_city_s`` / ``use_city_s``: the month's report at city level (rows: the
  counties), ``*_unit_s``: at one unit (rows: its vehicles);
- ``xlsx_city_s``: the city's month of the use report as XLSX (sheets: counties, units,
  vehicles).

Goals (#17): a day's rollup ≤ 10 s, a month report ≤ 1 s, the XLSX ≤ 5 s.
Sizes: ``FW_BENCH_REPORTS_VEHICLES`` / ``FW_BENCH_REPORTS_DAYS`` override the defaults
(10,000 × 31; ``--quick``: 1,000 × 7).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import os
import resource
import statistics
import time
from typing import Any

import numpy as np
import psycopg

from fleet.batch import PositionBatch
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from reports.daily import build_day
from reports.files import report_xlsx
from reports.service import ReportQuery, report_json, report_levels
from rules.events import AlarmEvent, episode_id
from store.config import StoreConfig
from store.history import day_bounds_ms
from store.postgres import PostgresHistory
from store.rollup import rollup_store

__all__ = ["run"]

DSN = os.environ.get("FLEETWATCH_BENCH_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TZ = "Asia/Shanghai"
GOALS = {"rollup_day_s": 10.0, "report_month_s": 1.0, "xlsx_s": 5.0}
FIRST_DAY = dt.date(2026, 10, 1)


def _registry(n: int) -> Registry:
    orgs = [OrgConfig(id="city", name="广安市")]
    for c in range(10):
        orgs.append(OrgConfig(id=f"c{c}", name=f"区县{c}", parent="city"))
        for u in range(10):
            orgs.append(OrgConfig(id=f"c{c}u{u}", name=f"单位{c}-{u}", parent=f"c{c}"))
    units = [o.id for o in orgs if "u" in o.id]
    vehicles = [
        VehicleConfig(
            id=f"v{i:05d}", plate=f"川X{i:05d}", terminal=f"1{i:010d}", org=units[i % len(units)]
        )
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(orgs))


def _day_positions(n: int, start_ms: int, rng: np.random.Generator) -> PositionBatch:
    hours = np.arange(24, dtype=np.int64) * 3_600_000
    hb_v = np.repeat(np.arange(n), 24)
    hb_t = start_ms + np.tile(hours, n)
    home_lat = 30.3 + (np.arange(n) % 100) * 0.004
    home_lon = 106.5 + (np.arange(n) // 100) * 0.003
    parts_v, parts_t, parts_lat, parts_lon, parts_sp, parts_acc = (
        [hb_v],
        [hb_t],
        [home_lat[hb_v]],
        [home_lon[hb_v]],
        [np.zeros(hb_v.size)],
        [np.zeros(hb_v.size, bool)],
    )
    k = np.arange(30)
    for base_h in (8, 14):
        t0 = start_ms + base_h * 3_600_000 + rng.integers(0, 180, n) * 60_000 + 17_000
        tv = np.repeat(np.arange(n), 30)
        parts_v.append(tv)
        parts_t.append(np.repeat(t0, 30) + np.tile(k, n) * 60_000)
        parts_lat.append(home_lat[tv] + np.tile(k, n) * 0.006)
        parts_lon.append(home_lon[tv] + np.tile(k, n) * 0.001)
        parts_sp.append(np.full(tv.size, 40.0))
        parts_acc.append(np.ones(tv.size, bool))
    return PositionBatch.from_columns(
        vehicle=np.concatenate(parts_v),
        ts=np.concatenate(parts_t),
        lat=np.concatenate(parts_lat),
        lon=np.concatenate(parts_lon),
        speed=np.concatenate(parts_sp),
        acc=np.concatenate(parts_acc),
    )


def _day_alarms(reg: Registry, start_ms: int, rng: np.random.Generator) -> list[AlarmEvent]:
    n = len(reg)
    out = []
    for kind, share in (("speeding", 0.05), ("off_hours", 0.02)):
        for v in np.flatnonzero(rng.random(n) < share).tolist():
            t = start_ms + int(rng.integers(8 * 3600, 20 * 3600)) * 1000
            vid = reg.ids[v]
            out.append(
                AlarmEvent(
                    id=episode_id(vid, kind, t),
                    vehicle=v,
                    vehicle_id=vid,
                    kind=kind,
                    action="close",
                    started_at=t,
                    ended_at=t + 60_000,
                    ts=t + 60_000,
                    lat=30.4,
                    lon=106.6,
                )
            )
    return out


def _day_orders(reg: Registry, start_ms: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    picked = np.flatnonzero(rng.random(len(reg)) < 0.3).tolist()
    return [
        {
            "id": f"o{start_ms}-{v}",
            "vehicle": reg.ids[v],
            "start": start_ms + 8 * 3_600_000,
            "end": start_ms + 12 * 3_600_000,
            "approved": True,
        }
        for v in picked
    ]


def _rss_mb() -> float:
    """The resident set now (not the peak: generating the history peaks first)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def _run(n: int, days: int, repeats: int) -> dict[str, Any]:
    schema = f"bench_reports_{os.getpid()}"
    cfg = StoreConfig(kind="postgres", postgres_dsn=DSN, postgres_schema=schema)
    reg = _registry(n)
    history = PostgresHistory(cfg)
    await history.open(reg)
    rng = np.random.default_rng(17)
    out: dict[str, Any] = {"vehicles": n, "days": days, "points_per_vehicle_day": 84}
    try:
        # -- the history ------------------------------------------------------------------
        t0 = time.perf_counter()
        orders: list[dict[str, Any]] = []
        n_pos = n_alarms = 0
        for d in range(days):
            start, _ = day_bounds_ms(FIRST_DAY + dt.timedelta(days=d), TZ)
            b = _day_positions(n, start, rng)
            n_pos += await history.write_positions(b)
            evs = _day_alarms(reg, start, rng)
            await history.write_alarm_events(evs)
            n_alarms += len(evs)
            orders += _day_orders(reg, start, rng)
        with psycopg.connect(DSN, autocommit=True) as conn:
            # half the episodes acknowledged 1..20 min after they began (handled with it)
            conn.execute(
                f"UPDATE {schema}.alarms SET ack_user = 'bench', handled = true,"
                " ack_at = started_at + 60000 + abs(hashtext(id)) % 1140000,"
                " acks = jsonb_build_array(jsonb_build_object('user', 'bench', 'note', '',"
                " 'action', 'ack', 'handled', true,"
                " 'at', started_at + 60000 + abs(hashtext(id)) % 1140000))"
                " WHERE abs(hashtext(id)) % 2 = 0"
            )
        out.update(positions=n_pos, alarms=n_alarms, orders=len(orders))
        out["generate_s"] = round(time.perf_counter() - t0, 1)
        # -- the nightly rollup, every day once ------------------------------------------
        rollup = rollup_store(history)
        await rollup.open()
        last = FIRST_DAY + dt.timedelta(days=days - 1)
        _, end = day_bounds_ms(last, TZ)
        times = []
        rss = []
        for d in range(days):
            day = FIRST_DAY + dt.timedelta(days=d)
            t = time.perf_counter()
            await build_day(history, rollup, reg, day, TZ, now_ms=end + 3_600_000, orders=orders)
            times.append(time.perf_counter() - t)
            gc.collect()
            rss.append(_rss_mb())
        out["rollup_day_s"] = round(statistics.median(times), 3)
        out["rollup_day_max_s"] = round(max(times), 3)
        out["rss_mb_after_first_day"] = round(rss[0], 1)
        out["rss_mb_after_last_day"] = round(rss[-1], 1)
        out["rss_mb_max_over_days"] = round(max(rss), 1)
        # What autovacuum does after the first nights; done now so that the plans below do
        # not depend on when it last ran.
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"ANALYZE {schema}.rollup_vehicle_day")
            conn.execute(f"ANALYZE {schema}.rollup_alarm")
        # -- month reports ---------------------------------------------------------------
        tree = reg.orgs
        plates = dict(zip(reg.ids, reg.plates, strict=True))
        to = last

        async def timed(q: ReportQuery) -> tuple[float, dict[str, Any]]:
            ts = []
            res: dict[str, Any] = {}
            for _ in range(repeats):
                t = time.perf_counter()
                res = await report_json(rollup, tree, plates, q)
                ts.append(time.perf_counter() - t)
            return statistics.median(ts), res

        for name in ("violations", "use"):
            s, res = await timed(ReportQuery(name, "city", FIRST_DAY, to))
            out[f"{name}_city_s"] = round(s, 4)
            out[f"{name}_city_rows"] = len(res["rows"])
            s, res = await timed(ReportQuery(name, "c3u7", FIRST_DAY, to))
            out[f"{name}_unit_s"] = round(s, 4)
            out[f"{name}_unit_rows"] = len(res["rows"])
        xs = []
        size = 0
        for _ in range(repeats):
            t = time.perf_counter()
            levels = await report_levels(
                rollup, tree, plates, ReportQuery("use", "city", FIRST_DAY, to)
            )
            body = report_xlsx(levels)
            xs.append(time.perf_counter() - t)
            size = len(body)
        out["xlsx_city_s"] = round(statistics.median(xs), 3)
        out["xlsx_bytes"] = size
        out["rollup_rows"] = n * days
    finally:
        await history.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    report_worst = max(
        out[k] for k in ("violations_city_s", "use_city_s", "violations_unit_s", "use_unit_s")
    )
    out["goals"] = GOALS
    out["ok"] = (
        out["rollup_day_s"] <= GOALS["rollup_day_s"]
        and report_worst <= GOALS["report_month_s"]
        and out["xlsx_city_s"] <= GOALS["xlsx_s"]
    )
    return out


def run(quick: bool = False) -> dict[str, Any]:
    n = int(os.environ.get("FW_BENCH_REPORTS_VEHICLES", 1_000 if quick else 10_000))
    days = int(os.environ.get("FW_BENCH_REPORTS_DAYS", 7 if quick else 31))
    return asyncio.run(_run(n, days, repeats=3 if quick else 5))
