"""The rules, one point at a time: the obvious version the vectorized engine must agree with.

Same public surface as :class:`rules.engine.RulesEngine` (process, tick,
add_order, open_episodes). Slow on purpose: plain Python per position, local
time through :mod:`zoneinfo`, membership asked one point at a time. Tests feed
both the same calls and require identical events.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from fleetwatch.batch import PositionBatch
from fleetwatch.registry import Registry
from rules.calendar import WorkCalendar
from rules.config import ALARM_BITS, RulesConfig, hhmm_minutes
from rules.episodes import EpisodeBook, Raw, apply_order
from rules.events import AlarmEvent
from rules.features import fence_names, off_hours_detail, schedule_of_org, season_of, step_m
from rules.orders import TOKEN_BITS, DispatchOrder, OrderBook
from rules.regions import inside_one

_MISMATCH = ("", "region", "window_late", "window_early", "vehicle")

__all__ = ["ReferenceEngine"]

_UTC0 = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NO_TS = -(2**62)
_RANK = {"close": 0, "open": 1, "update": 2}


class _Deb:
    """A debounced episode machine for one vehicle and one rule."""

    def __init__(self) -> None:
        self.open = False
        self.runval = False
        self.runstart = 0
        self.started = 0
        self.acc = 0

    def step(self, ts: int, c: bool, n_ms: int, m_ms: int) -> tuple[str | None, bool, bool]:
        was_open = self.open
        boundary = c != self.runval
        if boundary:
            self.runval = c
            self.runstart = ts
        dur = ts - self.runstart
        if c and dur >= n_ms:
            self.open = True
        elif not c and dur >= m_ms:
            self.open = False
        action = None
        if self.open and not was_open:
            action = "open"
            self.started = self.runstart
        elif was_open and not self.open:
            action = "close"
        return action, was_open, boundary


class _Vehicle:
    def __init__(self) -> None:
        self.last_ts: int | None = None
        self.lat = math.nan
        self.lon = math.nan
        self.rules: dict[str, _Deb] = {}
        self.f_prev_ts = _NO_TS
        self.f_still = False
        self.f_rest_start = 0
        self.f_active = False
        self.f_stint = 0
        self.offline = False

    def deb(self, key: str) -> _Deb:
        if key not in self.rules:
            self.rules[key] = _Deb()
        return self.rules[key]


class ReferenceEngine:
    def __init__(
        self,
        cfg: RulesConfig,
        registry: Registry,
        *,
        fences: Callable[[], Any | None] | None = None,
        timezone: str = "Asia/Shanghai",
        calendar: WorkCalendar | None = None,
        orders: OrderBook | None = None,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.fences = fences
        self.tz = ZoneInfo(timezone)
        self.calendar = calendar or WorkCalendar(cfg.calendar.override_file)
        self.orders = orders if orders is not None else OrderBook(excuses=cfg.orders.excuses)
        self.vehicles = [_Vehicle() for _ in range(len(registry))]
        self.book = EpisodeBook(registry, critical=frozenset(cfg.terminal_alarm.critical))
        self.max_ts: int | None = None
        self.cards: dict[str, str] = {}  # vehicle id → driver card in it

    # -- API ---------------------------------------------------------------------------------

    def _follow_registry(self) -> None:
        """New vehicles of a registry that grew start with fresh state."""
        while len(self.vehicles) < len(self.registry):
            self.vehicles.append(_Vehicle())

    def process(self, batch: PositionBatch) -> list[AlarmEvent]:
        self._follow_registry()
        rows: list[dict[str, Any]] = []
        for i in range(len(batch)):
            v = int(batch.vehicle[i])
            ts = int(batch.ts[i])
            last = self.vehicles[v].last_ts
            late = bool(batch.backfill[i]) or (last is not None and ts <= last)
            speed = float(batch.speed[i])
            rows.append(
                {
                    "i": i,
                    "v": v,
                    "ts": ts,
                    "lat": float(batch.lat[i]),
                    "lon": float(batch.lon[i]),
                    "speed": 0.0 if math.isnan(speed) else speed,
                    "acc": bool(batch.acc[i]),
                    "alarm": int(batch.alarm_bits[i]),
                    "late": late,
                }
            )
        live = sorted((r for r in rows if not r["late"]), key=lambda r: (r["v"], r["ts"]))
        late_rows = sorted((r for r in rows if r["late"]), key=lambda r: (r["v"], r["ts"]))
        out: list[AlarmEvent] = []
        # offline episodes close at the first new row of their vehicle
        seen: set[int] = set()
        for r in live:
            veh = self.vehicles[r["v"]]
            if r["v"] not in seen and veh.offline:
                veh.offline = False
                out.append(
                    self.book.apply(
                        Raw(r["v"], "offline", "close", r["ts"], 0, r["ts"], r["lat"], r["lon"], {})
                    )
                )
            seen.add(r["v"])
        for r in live:
            veh = self.vehicles[r["v"]]
            for raw in self._point(veh, r):
                out.append(self.book.apply(raw))
            veh.last_ts = r["ts"]
            veh.lat, veh.lon = r["lat"], r["lon"]
            self.max_ts = r["ts"] if self.max_ts is None else max(self.max_ts, r["ts"])
        if late_rows:
            fresh = [_Vehicle() for _ in range(len(self.registry))]
            book = EpisodeBook(self.registry, critical=self.book.critical, backfill=True)
            events = []
            ends: dict[int, tuple[int, float, float]] = {}
            for r in late_rows:
                veh = fresh[r["v"]]
                for raw in self._point(veh, r):
                    events.append(book.apply(raw))
                veh.lat, veh.lon = r["lat"], r["lon"]
                ends[r["v"]] = (r["ts"], r["lat"], r["lon"])
            events += book.close_all(ends)
            self.book.closed.extend(book.closed)
            out += [e for e in events if e.action == "close"]
        if self.max_ts is not None:
            self.book.prune(self.max_ts - int(self.cfg.orders.lookback_h * 3_600_000))
        return out

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        if not self.cfg.offline.enabled:
            return []
        self._follow_registry()
        out = []
        for v, veh in enumerate(self.vehicles):
            if veh.offline and not self.registry.expected[v]:  # handed over: no longer expected
                veh.offline = False
                out.append(
                    self.book.apply(
                        Raw(
                            v,
                            "offline",
                            "close",
                            now_ms,
                            0,
                            now_ms,
                            veh.lat,
                            veh.lon,
                            {"retired": True},
                        )
                    )
                )
                continue
            if veh.last_ts is None or veh.offline or not self.registry.expected[v]:
                continue
            if now_ms - veh.last_ts >= int(self.cfg.offline.after_s * 1000):
                veh.offline = True
                out.append(
                    self.book.apply(
                        Raw(
                            v,
                            "offline",
                            "open",
                            now_ms,
                            veh.last_ts,
                            None,
                            veh.lat,
                            veh.lon,
                            {"last_report": veh.last_ts},
                        )
                    )
                )
        return out

    def add_order(self, order: DispatchOrder) -> list[AlarmEvent]:
        return apply_order(self.orders, self.book, order)

    def open_episodes(self) -> list[AlarmEvent]:
        return sorted(self.book.open.values(), key=lambda e: (e.vehicle, e.kind, e.id))

    # -- one point ---------------------------------------------------------------------------

    def _fence_facts(self, v: int, lon: float, lat: float) -> dict[str, Any] | None:
        index = self.fences() if self.fences is not None else None
        if index is None:
            return None
        from geofence.index import USE_CODES

        org = int(self.registry.org_index[v])
        org_id = self.registry.orgs.ids[org]
        lineage = set()
        o = org
        while o >= 0:
            lineage.add(self.registry.orgs.ids[o])
            o = int(self.registry.orgs.parent[o])

        def fence_org(f: int) -> str:
            return str(index.org_names[int(index.org[f])])

        facts: dict[str, Any] = {
            "zone": math.inf,
            "allowed": False,
            "forbidden": None,
            "lot": False,
            "has_region": False,
            "has_lot": False,
        }
        for f in range(len(index.ids)):
            u = int(index.use[f])
            if u == USE_CODES["allowed_region"] and fence_org(f) in lineage:
                facts["has_region"] = True
            if u == USE_CODES["lot"] and fence_org(f) == org_id:
                facts["has_lot"] = True
        _, fs = index.membership(np.array([lon]), np.array([lat]))
        for f in fs.tolist():
            u = int(index.use[f])
            lim = float(index.speed_limit_kmh[f])
            if u == USE_CODES["speed_zone"] and not math.isnan(lim):
                facts["zone"] = min(facts["zone"], lim)
            elif u == USE_CODES["allowed_region"] and fence_org(f) in lineage:
                facts["allowed"] = True
            elif u == USE_CODES["forbidden"]:
                if facts["forbidden"] is None:
                    facts["forbidden"] = index.ids[f]
            elif u == USE_CODES["lot"] and fence_org(f) == org_id:
                facts["lot"] = True
        return facts

    def _local(self, ts: int) -> tuple[dt.date, int]:
        t = (_UTC0 + dt.timedelta(milliseconds=ts)).astimezone(self.tz)
        mod = ((t.hour * 60 + t.minute) * 60 + t.second) * 1000 + t.microsecond // 1000
        return t.date(), mod

    def _point(self, veh: _Vehicle, r: dict[str, Any]) -> list[Raw]:
        cfg = self.cfg
        v, ts, speed, acc = r["v"], r["ts"], r["speed"], r["acc"]
        found: list[tuple[int, int, Raw]] = []

        def raw(
            rule: int,
            key: str,
            action: str,
            started: int,
            ended: int | None,
            detail: dict[str, Any],
        ) -> None:
            found.append(
                (
                    rule,
                    _RANK[action],
                    Raw(v, key, action, ts, started, ended, r["lat"], r["lon"], detail),
                )
            )

        def run(
            rule: int,
            key: str,
            c: bool,
            n_s: float,
            m_s: float,
            detail: Callable[[], dict[str, Any]],
            close_detail: bool = False,
        ) -> tuple[str | None, bool, bool, _Deb]:
            d = veh.deb(key)
            action, was_open, boundary = d.step(ts, c, round(n_s * 1000), round(m_s * 1000))
            return action, was_open, boundary, d

        no_on = cfg.no_order.enabled and bool(cfg.no_order.orgs)
        need_geo = (
            cfg.speeding.enabled
            or cfg.out_of_area.enabled
            or cfg.forbidden_zone.enabled
            or cfg.parking_violation.enabled
            or no_on
            or cfg.order_mismatch.enabled
        )
        facts = self._fence_facts(v, r["lon"], r["lat"]) if need_geo else None
        index: Any = self.fences() if facts is not None and self.fences is not None else None
        date, mod = self._local(ts)
        day = self.calendar.day(date)
        ex = self.orders.excuses_at(self.registry.ids[v], ts)

        if cfg.speeding.enabled:
            sp = cfg.speeding
            vlim = float(self.registry.speed_limit_kmh[v])
            zone = facts["zone"] if facts else math.inf
            limit = min(vlim, zone)
            c = speed > limit
            action, was_open, boundary, d = run(
                0, "speeding", c, sp.min_duration_s, sp.close_after_s, dict
            )
            val = min(round(speed * 10), 2**24 - 1)
            prev_acc = d.acc
            d.acc = val if (c and boundary and not was_open) else max(d.acc, val)
            det = {
                "limit_kmh": limit,
                "speed_kmh": speed,
                "peak_kmh": d.acc / 10,
                "max_speed_kmh": d.acc / 10,
                "zone": zone < vlim,
            }
            step = max(1, round(sp.update_step_kmh * 10))
            if action == "open":
                raw(0, "speeding", "open", d.started, None, det)
            elif action == "close":
                raw(0, "speeding", "close", d.started, d.runstart, det)
            elif d.open and was_open and d.acc // step > prev_acc // step:
                raw(0, "speeding", "update", 0, None, det)

        if cfg.off_hours.enabled:
            oh = cfg.off_hours
            moving = acc and speed > oh.moving_speed_kmh
            org = int(self.registry.org_index[v])
            sched_org = schedule_of_org(org, self.registry, oh.working_hours)
            sched = (
                oh.working_hours.default
                if sched_org is None
                else oh.working_hours.by_org[sched_org]
            )
            windows = sched.minutes(season_of(date, oh.working_hours))
            in_win = any(a * 60_000 <= mod < b * 60_000 for a, b in windows)
            need = TOKEN_BITS["off_hours.after_hours" if day.workday else "off_hours.rest_day"]
            c = moving and not (day.workday and in_win) and not (ex & need)
            action, _, _, d = run(1, "off_hours", c, oh.min_duration_s, oh.close_after_s, dict)
            if action == "open":
                raw(1, "off_hours", "open", d.started, None, off_hours_detail(day))
            elif action == "close":
                raw(1, "off_hours", "close", d.started, d.runstart, {})

        if cfg.out_of_area.enabled and facts is not None:
            oa = cfg.out_of_area
            c = (
                facts["has_region"]
                and not facts["allowed"]
                and not (ex & TOKEN_BITS["out_of_area"])
            )
            action, was_open, boundary, d = run(
                2, "out_of_area", c, oa.min_duration_s, oa.close_after_s, dict
            )
            step_m_ = step_m(veh.lat, veh.lon, r["lat"], r["lon"])
            prev_acc = d.acc
            if c and boundary and not was_open:
                d.acc = 0
            elif c:
                d.acc += step_m_
            det = {
                "distance_km": d.acc / 1000,
                "fence_name": fence_names(index, self.registry, v, "allowed_region"),
            }
            stepm = max(1, round(oa.update_step_km * 1000))
            if action == "open":
                raw(2, "out_of_area", "open", d.started, None, det)
            elif action == "close":
                raw(2, "out_of_area", "close", d.started, d.runstart, det)
            elif d.open and was_open and d.acc // stepm > prev_acc // stepm:
                raw(2, "out_of_area", "update", 0, None, det)

        if cfg.forbidden_zone.enabled and facts is not None:
            fz = cfg.forbidden_zone
            c = facts["forbidden"] is not None
            action, _, _, d = run(3, "forbidden_zone", c, fz.min_duration_s, fz.close_after_s, dict)
            if action == "open":
                fid = facts["forbidden"]
                name = index.fences[index.ids.index(fid)].name
                raw(
                    3, "forbidden_zone", "open", d.started, None, {"fence": fid, "fence_name": name}
                )
            elif action == "close":
                raw(3, "forbidden_zone", "close", d.started, d.runstart, {})

        if cfg.parking_violation.enabled and facts is not None:
            pk = cfg.parking_violation
            parked = (not acc) or speed <= pk.parked_speed_kmh
            away = facts["has_lot"] and not facts["lot"]
            a, b = hhmm_minutes(pk.night_start) * 60_000, hhmm_minutes(pk.night_end) * 60_000
            night = (mod >= a or mod < b) if a > b else (a <= mod < b)
            rest = pk.on_rest_days and not day.workday
            v_night = night and not (ex & TOKEN_BITS["parking_violation.night"])
            v_rest = rest and not (ex & TOKEN_BITS["parking_violation.rest_day"])
            c = parked and away and (v_night or v_rest)
            action, _, _, d = run(4, "parking_violation", c, pk.grace_s, pk.close_after_s, dict)
            if action == "open":
                raw(
                    4,
                    "parking_violation",
                    "open",
                    d.started,
                    None,
                    {
                        "reason": "night" if v_night else "rest_day",
                        "fence_name": fence_names(index, self.registry, v, "lot"),
                    },
                )
            elif action == "close":
                raw(4, "parking_violation", "close", d.started, d.runstart, {})

        if cfg.terminal_alarm.enabled:
            ta = cfg.terminal_alarm
            for name in ta.bits:
                bit = ALARM_BITS[name]
                key = f"terminal_alarm/{name}"
                c = bool((r["alarm"] >> bit) & 1)
                action, _, _, d = run(5, key, c, 0.0, ta.close_after_s, dict)
                if action == "open":
                    raw(5, key, "open", d.started, None, {"bit": bit, "name": name})
                elif action == "close":
                    raw(5, key, "close", d.started, d.runstart, {})

        if cfg.fatigue.enabled:
            fc = cfg.fatigue
            rest_ms, max_ms = round(fc.rest_s * 1000), round(fc.max_driving_s * 1000)
            moving = acc and speed > fc.moving_speed_kmh
            still = not moving
            if still and not veh.f_still:
                veh.f_rest_start = ts
            rested = (ts - veh.f_prev_ts >= rest_ms) or (still and ts - veh.f_rest_start >= rest_ms)
            starts = moving and (rested or not veh.f_active)
            if moving or rested:
                veh.f_active = moving
            if starts:
                veh.f_stint = ts
            c = veh.f_active and ts - veh.f_stint > max_ms
            veh.f_prev_ts, veh.f_still = ts, still
            action, _, _, d = run(6, "fatigue", c, 0.0, 0.0, dict)
            if action == "open":
                raw(
                    6,
                    "fatigue",
                    "open",
                    d.started,
                    None,
                    {"stint_started_at": veh.f_stint, "driving_s": (ts - veh.f_stint) / 1000},
                )
            elif action == "close":
                raw(6, "fatigue", "close", d.started, d.runstart, {})

        if cfg.sealed_moving.enabled:
            sm = cfg.sealed_moving
            c = bool(self.registry.sealed[v]) and (acc or speed > sm.moving_speed_kmh)
            action, _, _, d = run(7, "sealed_moving", c, sm.min_duration_s, sm.close_after_s, dict)
            if action == "open":
                raw(7, "sealed_moving", "open", d.started, None, {"speed_kmh": speed, "acc": acc})
            elif action == "close":
                raw(7, "sealed_moving", "close", d.started, d.runstart, {})

        vid = self.registry.ids[v]
        order = self.orders.covering(vid, ts)
        if no_on and facts is not None:
            no = cfg.no_order
            c = self._org_on(v, no.orgs) and facts["has_lot"] and not facts["lot"] and order is None
            t = veh.deb("no_order.trip")
            boundary = c != t.runval
            if boundary:
                t.runval, t.runstart = c, ts
            if c and boundary:
                t.acc = 0
            elif c:
                t.acc += step_m(veh.lat, veh.lon, r["lat"], r["lon"])
            c2 = c and (
                t.acc > round(no.min_km * 1000) or ts - t.runstart >= round(no.min_minutes * 60_000)
            )
            action, _, _, d = run(8, "no_order", c2, 0.0, no.close_after_s, dict)
            if action == "open":
                det = {
                    "left_at": t.runstart,
                    "distance_km": t.acc / 1000,
                    "fence_name": fence_names(index, self.registry, v, "lot"),
                }
                raw(8, "no_order", "open", d.started, None, det)
            elif action == "close":
                raw(8, "no_order", "close", d.started, d.runstart, {})

        if cfg.order_mismatch.enabled and facts is not None:
            om = cfg.order_mismatch
            why = 0
            if order is not None and order.region is not None:
                ok = inside_one(
                    order.region, r["lon"], r["lat"], om.region_tolerance_km, om.corridor_km
                )
                why = 0 if ok else 1
            away = facts["has_lot"] and not facts["lot"]
            t = veh.deb("order_mismatch.trip")
            boundary = away != t.runval
            if boundary:
                t.runval, t.runstart = away, ts
            under = int(away and order is not None)
            t.acc = under if (away and boundary) else max(t.acc, under)
            pad = round(om.window_tolerance_minutes * 60_000)
            late = (
                away and order is None and t.acc > 0 and self.orders.covering(vid, ts, pad) is None
            )
            early = away and order is not None and t.runstart < order.start - pad
            if why == 0 and late:
                why = 2
            if why == 0 and early:
                why = 3
            other = None
            if (
                om.vehicle_check
                and away
                and order is None
                and ts - t.runstart >= round(om.vehicle_grace_s * 1000)
            ):
                other = self.orders.covering_in_org(
                    self.registry, int(self.registry.org_index[v]), ts
                )
                if why == 0 and other is not None:
                    why = 4
            action, _, _, d = run(
                9, "order_mismatch", why > 0, om.min_duration_s, om.close_after_s, dict
            )
            if action == "open":
                o = other if why == 4 else order if why != 2 else None
                om_det: dict[str, Any] = {
                    "reason": _MISMATCH[why],
                    "order": o.id if o else None,
                }
                if why == 1 and o is not None:
                    om_det["region"] = o.region
                if why == 3:
                    om_det["left_at"] = t.runstart
                if why == 4 and o is not None:
                    om_det["order_vehicle"] = o.vehicle_id
                raw(9, "order_mismatch", "open", d.started, None, om_det)
            elif action == "close":
                raw(9, "order_mismatch", "close", d.started, d.runstart, {})

        if cfg.driver_mismatch.enabled:
            dm = cfg.driver_mismatch
            card = self.cards.get(vid)
            c = bool(order is not None and card and order.driver_id and card != order.driver_id)
            action, _, _, d = run(
                10, "driver_mismatch", c, dm.min_duration_s, dm.close_after_s, dict
            )
            if action == "open":
                assert order is not None
                dd = {"driver": card, "order_driver": order.driver_id, "order": order.id}
                raw(10, "driver_mismatch", "open", d.started, None, dd)
            elif action == "close":
                raw(10, "driver_mismatch", "close", d.started, d.runstart, {})

        found.sort(key=lambda t: (t[0], t[1]))
        return [t[2] for t in found]

    def driver_card(self, vehicle_id: str, driver_id: str | None, ts: int) -> list[AlarmEvent]:
        if vehicle_id in self.registry.ids:
            if driver_id:
                self.cards[vehicle_id] = driver_id
            else:
                self.cards.pop(vehicle_id, None)
        return []

    def _org_on(self, v: int, names: list[str]) -> bool:
        o = int(self.registry.org_index[v])
        while o >= 0:
            if self.registry.orgs.ids[o] in names:
                return True
            o = int(self.registry.orgs.parent[o])
        return False
