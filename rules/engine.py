"""The rules engine: positions (columnar) + fences + calendar + orders → alarm episodes.

Feed :meth:`RulesEngine.process` batches in any row order; call
:meth:`RulesEngine.tick` with the current time for the timer rule (offline);
call :meth:`RulesEngine.add_order` when a dispatch order is approved. Each
call returns the :class:`~rules.events.AlarmEvent` changes it caused, in a
deterministic order. Time comes only from the positions and the ``now_ms``
arguments, so replaying history gives the same episodes with the same ids.

How a rule runs. Rows are sorted by (vehicle, ts) and each rule computes one
boolean *condition* per row (speed over the limit, outside the allowed
region, ...). A debounced episode machine then turns conditions into
episodes: a run of true rows lasting ``min_duration_s`` opens an episode
(``started_at`` = the first row of the run), a run of false rows lasting
``close_after_s`` closes it (``ended_at`` = the first false row). Because
the state after a row is the state set by the last row that *triggered* (a
long-enough true or false run), the machine is a handful of segmented scans
(forward fills by ``np.maximum.accumulate``) with per-vehicle state carried
in arrays between batches. :mod:`rules.reference` is the same machine written
one point at a time; the tests check that both give identical episodes.

Back-fill: a row that is flagged ``backfill`` or is not newer than the
vehicle's last processed row never reaches the live machines. Such rows of one
batch are run through fresh machines of their own; an episode found there is
recorded as one closed ``backfill=True`` event (id ending ``:backfill``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleetwatch.batch import PositionBatch
from fleetwatch.errors import Misuse
from fleetwatch.registry import Registry, grown
from rules.calendar import WorkCalendar
from rules.config import ALARM_BITS, RulesConfig
from rules.episodes import EpisodeBook, Raw, apply_order
from rules.events import AlarmEvent
from rules.features import DayTable, Schedules, fence_names, step_m_array
from rules.orders import TOKEN_BITS, DispatchOrder, OrderBook
from rules.regions import inside as regions_inside

__all__ = ["RulesEngine"]

Arr = npt.NDArray[Any]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

# Rule order inside one row (the order events of one row are emitted in).
RULE_ORDER = (
    "speeding",
    "off_hours",
    "out_of_area",
    "forbidden_zone",
    "parking_violation",
    "terminal_alarm",
    "fatigue",
    "sealed_moving",
    "no_order",
    "order_mismatch",
    "driver_mismatch",
)
_TS_BITS = 42  # epoch ms below 2**42: until the year 2109
_RANK = {"close": 0, "open": 1, "update": 2}
_INT_MIN = np.iinfo(np.int64).min
_NO_TS = -(2**62)
_PEAK_BITS = 24  # peak speeds in 0.1 km/h fit in 24 bits (1,677,721 = 167,772 km/h)

#: order_mismatch reasons, by the code the rule computes per row.
_MISMATCH = ("", "region", "window_late", "window_early", "vehicle")
_OFF_AFTER = TOKEN_BITS["off_hours.after_hours"]
_OFF_REST = TOKEN_BITS["off_hours.rest_day"]
_OOA = TOKEN_BITS["out_of_area"]
_PARK_NIGHT = TOKEN_BITS["parking_violation.night"]
_PARK_REST = TOKEN_BITS["parking_violation.rest_day"]


@dataclass
class _Machine:
    """Carried state of one debounced episode machine, per vehicle."""

    open: B
    runval: B
    runstart: I64
    started: I64
    acc: I64  # rule accumulator: peak speed (0.1 km/h) or distance outside (m)

    @classmethod
    def fresh(cls, n: int) -> _Machine:
        return cls(
            np.zeros(n, bool),
            np.zeros(n, bool),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
            np.zeros(n, np.int64),
        )


@dataclass
class _State:
    """Everything the live engine carries between batches, per vehicle."""

    n: int
    last_ts: I64
    last_lat: npt.NDArray[np.float64]
    last_lon: npt.NDArray[np.float64]
    f_prev_ts: I64  # fatigue: previous row time
    f_still: B  # fatigue: previous row was not moving
    f_rest_start: I64
    f_active: B
    f_stint: I64
    off_open: B  # offline episode open
    machines: dict[str, _Machine] = field(default_factory=dict)

    @classmethod
    def fresh(cls, n: int) -> _State:
        return cls(
            n,
            np.full(n, _INT_MIN, np.int64),
            np.full(n, np.nan),
            np.full(n, np.nan),
            np.full(n, _NO_TS, np.int64),
            np.zeros(n, bool),
            np.zeros(n, np.int64),
            np.zeros(n, bool),
            np.zeros(n, np.int64),
            np.zeros(n, bool),
        )

    def machine(self, key: str) -> _Machine:
        m = self.machines.get(key)
        if m is None:
            m = self.machines[key] = _Machine.fresh(self.n)
        return m

    def arrays(self) -> dict[str, Arr]:
        out: dict[str, Arr] = {
            k: getattr(self, k)
            for k in (
                "last_ts",
                "last_lat",
                "last_lon",
                "f_prev_ts",
                "f_still",
                "f_rest_start",
                "f_active",
                "f_stint",
                "off_open",
            )
        }
        for key, m in self.machines.items():
            for f in ("open", "runval", "runstart", "started", "acc"):
                out[f"m:{key}:{f}"] = getattr(m, f)
        return out

    @classmethod
    def from_arrays(cls, n: int, arrays: dict[str, Arr], src: I64, dst: I64) -> _State:
        """State for ``n`` vehicles; saved vehicle ``src[k]`` becomes vehicle ``dst[k]``."""
        st = cls.fresh(n)
        for k, v in arrays.items():
            if k.startswith("m:"):
                _, key, f = k.split(":")
                getattr(st.machine(key), f)[dst] = v[src]
            else:
                getattr(st, k)[dst] = v[src]
        return st


class _Rows:
    """Rows of one batch sorted by (vehicle, ts), with the segmented-scan helpers."""

    def __init__(self, batch: PositionBatch, order: I64) -> None:
        self.idx = order
        self.veh = batch.vehicle[order].astype(np.intp)
        self.ts = batch.ts[order]
        self.lat = batch.lat[order]
        self.lon = batch.lon[order]
        sp = batch.speed[order]
        self.speed = np.where(np.isnan(sp), np.float32(0), sp)
        self.acc = batch.acc[order]
        self.alarm = batch.alarm_bits[order]
        n = self.n = order.shape[0]
        self.ar = np.arange(n, dtype=np.int64)
        first = np.ones(n, bool)
        if n > 1:
            first[1:] = self.veh[1:] != self.veh[:-1]
        self.first = first
        last = np.ones(n, bool)
        if n > 1:
            last[:-1] = first[1:]
        self.last_i = np.flatnonzero(last)
        self.first_i = np.flatnonzero(first)
        self.vl = self.veh[self.last_i]

    def shift(self, a: Arr, carry: Arr) -> Arr:
        """a[i-1] within a vehicle; the carried value at the vehicle's first row."""
        out = np.empty_like(a)
        out[1:] = a[:-1]
        out[self.first_i] = carry[self.veh[self.first_i]]
        return out

    def ffill(self, mask: B) -> I64:
        """Index of the last row <= i of the same vehicle where ``mask`` holds (else its first
        row — check ``mask[result]``)."""
        return np.maximum.accumulate(np.where(mask | self.first, self.ar, 0))

    def sub(self, sel: I64) -> _Rows:
        """The rows at ``sel`` — every row of some vehicles — as rows of their own."""
        out = object.__new__(_Rows)
        out.veh = self.veh[sel]
        out.ts = self.ts[sel]
        n = out.n = sel.shape[0]
        out.ar = np.arange(n, dtype=np.int64)
        first = np.ones(n, bool)
        if n > 1:
            first[1:] = out.veh[1:] != out.veh[:-1]
        out.first = first
        last = np.ones(n, bool)
        if n > 1:
            last[:-1] = first[1:]
        out.last_i = np.flatnonzero(last)
        out.first_i = np.flatnonzero(first)
        out.vl = out.veh[out.last_i]
        return out


def _vehicle_time_order(vehicle: Arr, ts: I64) -> I64:
    """The stable permutation sorting rows by (vehicle, ts) — ``np.lexsort((ts, vehicle))``.

    One stable argsort of a packed int64 key is ~30x faster than lexsort; positions
    outside 1970..2109 (never seen from a real terminal) take the lexsort path."""
    if ts.shape[0] and (ts.min() < 0 or ts.max() >= 1 << _TS_BITS):
        return np.lexsort((ts, vehicle))
    return np.argsort((vehicle.astype(np.int64) << _TS_BITS) + ts, kind="stable")


def _machine(
    rows: _Rows, m: _Machine, c: B, n_ms: int, m_ms: int
) -> tuple[B, B, B, B, I64, I64, B]:
    """The debounced episode machine over sorted rows. Returns per row: state after,
    state before, opens, closes, run start, episode start, run boundary."""
    veh, ts = rows.veh, rows.ts
    prev_c = rows.shift(c, m.runval)
    boundary = c != prev_c
    j = rows.ffill(boundary)
    rs = np.where(boundary[j], ts[j], m.runstart[veh])
    dur = ts - rs
    trig = np.where(c, dur >= n_ms, dur >= m_ms)
    k = rows.ffill(trig)
    state = np.where(trig[k], c[k], m.open[veh])
    prev_state = rows.shift(state, m.open)
    opens = state & ~prev_state
    closes = prev_state & ~state
    o = rows.ffill(opens)
    started = np.where(opens[o], rs[o], m.started[veh])
    li, vl = rows.last_i, rows.vl
    m.open[vl] = state[li]
    m.runval[vl] = c[li]
    m.runstart[vl] = rs[li]
    m.started[vl] = started[li]
    return state, prev_state, opens, closes, rs, started, boundary


def _seg_max(rows: _Rows, vals: I64, marker: B, carry: I64) -> I64:
    """Running max of ``vals`` restarting at ``marker`` rows; ``carry`` before the first."""
    seg = np.cumsum(marker | rows.first)
    key = (seg << _PEAK_BITS) + vals
    run = np.maximum.accumulate(key) - (seg << _PEAK_BITS)
    s = rows.ffill(marker)
    return np.where(marker[s], run, np.maximum(run, carry[rows.veh]))


def _seg_sum(rows: _Rows, vals: I64, marker: B, carry: I64) -> I64:
    """Running sum of ``vals`` restarting (at 0) at ``marker`` rows; ``carry`` before."""
    vals = np.where(marker, 0, vals)
    cs = np.cumsum(vals)
    s = rows.ffill(marker)
    return cs - (cs[s] - vals[s]) + np.where(marker[s], 0, carry[rows.veh])


@dataclass
class _FenceView:
    """Per-fence arrays of one FenceIndex, resolved against the registry's organisations."""

    index: Any
    allowed_for_org: B  # (n_orgs, n_fences)
    allowed_everywhere: B  # per fence: an allowed region for every vehicle's organisation
    lot_org: npt.NDArray[np.int32]  # registry org index of a lot fence, else -1
    has_region: B  # per vehicle
    has_lot: B  # per vehicle
    use: npt.NDArray[np.int8]
    limit: npt.NDArray[np.float32]
    ids: tuple[str, ...]


def fence_view(index: Any, registry: Registry) -> _FenceView:
    from geofence.index import USE_CODES

    orgs = registry.orgs
    n_org = len(orgs.ids)
    org_pos = {o: i for i, o in enumerate(orgs.ids)}
    f_org = np.array(
        [org_pos.get(index.org_names[o], -1) for o in index.org.tolist()], dtype=np.int32
    ).reshape(-1)
    use = np.asarray(index.use, dtype=np.int8)
    # anc[o, a]: a is o or one of its ancestors.
    anc = np.zeros((n_org, n_org), bool)
    parent = orgs.parent.tolist()
    for o in range(n_org):
        a = o
        while a >= 0:
            anc[o, a] = True
            a = parent[a]
    nf = use.shape[0]
    allowed = np.zeros((n_org, nf), bool)
    is_allowed = (use == USE_CODES["allowed_region"]) & (f_org >= 0)
    if nf:
        allowed[:, is_allowed] = anc[:, f_org[is_allowed]]
    lot_org = np.where((use == USE_CODES["lot"]) & (f_org >= 0), f_org, -1).astype(np.int32)
    has_lot_org = np.zeros(n_org, bool)
    has_lot_org[lot_org[lot_org >= 0]] = True
    used_orgs = np.unique(registry.org_index)
    everywhere = allowed[used_orgs].all(axis=0) if used_orgs.size else np.zeros(nf, bool)
    return _FenceView(
        index,
        allowed,
        np.asarray(everywhere, dtype=bool),
        lot_org,
        np.asarray(allowed.any(axis=1), dtype=bool)[registry.org_index],
        has_lot_org[registry.org_index],
        use,
        np.asarray(index.speed_limit_kmh, dtype=np.float32),
        tuple(index.ids),
    )


@dataclass
class _Geo:
    """Per-row fence facts for sorted rows."""

    zone_limit: npt.NDArray[np.float32]
    in_allowed: B
    in_forbidden: B
    forbidden_fence: npt.NDArray[np.int32]
    in_lot: B


def geo_rows(view: _FenceView | None, registry: Registry, veh: Arr, lon: Arr, lat: Arr) -> _Geo:
    n = veh.shape[0]
    zl = np.full(n, np.inf, np.float32)
    ia, ifb, il = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    ff = np.full(n, np.iinfo(np.int32).max, np.int32)
    if view is None or n == 0 or view.use.shape[0] == 0:
        return _Geo(zl, ia, ifb, ff, il)
    from geofence.index import USE_CODES

    p, f = view.index.membership(lon, lat)
    if p.size == 0:
        return _Geo(zl, ia, ifb, ff, il)
    u = view.use[f]
    # Pairs come sorted by point, then fence: within one use, a point's first pair holds
    # its lowest fence index, and runs of one point are contiguous (reduceat-friendly).
    s = np.flatnonzero(u == USE_CODES["speed_zone"])
    if s.size:
        ps, lim = p[s], view.limit[f[s]]
        keep = ~np.isnan(lim)
        ps, lim = ps[keep], lim[keep]
        if ps.size:
            head = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
            zl[ps[head]] = np.minimum.reduceat(lim, head)
    s = np.flatnonzero(u == USE_CODES["allowed_region"])
    if s.size:
        fs, ps = f[s], p[s]
        if view.allowed_everywhere[fs].all():
            ia[ps] = True
        else:
            org_p = registry.org_index[veh[ps]]
            ia[ps[np.asarray(view.allowed_for_org[org_p, fs], dtype=bool)]] = True
    s = np.flatnonzero(u == USE_CODES["forbidden"])
    if s.size:
        ps, fs = p[s], f[s]
        ifb[ps] = True
        head = np.r_[True, ps[1:] != ps[:-1]]
        ff[ps[head]] = fs[head]
    s = np.flatnonzero(u == USE_CODES["lot"])
    if s.size:
        ps = p[s]
        ok = view.lot_org[f[s]] == registry.org_index[veh[ps]]
        il[ps[ok]] = True
    return _Geo(zl, ia, ifb, ff, il)


def orgs_on(registry: Registry, names: list[str]) -> B:
    """Per vehicle: its organisation, or one of its ancestors, is in ``names``."""
    orgs = registry.orgs
    want = set(names)
    on = np.zeros(len(orgs.ids), bool)
    parent = orgs.parent.tolist()
    for o in range(len(orgs.ids)):
        a = o
        while a >= 0 and not on[o]:
            on[o] = orgs.ids[a] in want
            a = parent[a]
    return on[registry.org_index] if len(registry) else np.zeros(0, bool)


class RulesEngine:
    """All eight rules over columnar batches. Not thread-safe; one per partition of vehicles."""

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
        self._fences = fences
        self._view: _FenceView | None = None
        self._view_of: Any = None
        self.calendar = calendar or WorkCalendar(cfg.calendar.override_file)
        self.orders = orders if orders is not None else OrderBook(excuses=cfg.orders.excuses)
        self.days = DayTable(timezone, self.calendar, cfg.off_hours.working_hours)
        self.schedules = Schedules(cfg.off_hours.working_hours, registry)
        n = len(registry)
        self.state = _State.fresh(n)
        self.book = EpisodeBook(registry, critical=frozenset(cfg.terminal_alarm.critical))
        self._vlimit = np.asarray(registry.speed_limit_kmh, dtype=np.float32)
        self._max_ts = _INT_MIN
        self._names: dict[tuple[int, int, str], str] = {}  # (index, org, use) -> fence names
        ta = cfg.terminal_alarm
        self._bits = [(name, ALARM_BITS[name]) for name in ta.bits] if ta.enabled else []
        self._reg_version = registry.version
        self._no_order_on = orgs_on(registry, cfg.no_order.orgs)
        self._card = np.full(n, "", dtype=object)  # driver card in each vehicle ("": none)
        self._drivers = False  # a driver card was ever reported

    # -- live registry (records issue) ---------------------------------------------------------

    def grow(self) -> None:
        """Follow the registry after a vehicle was added, changed or retired.

        New vehicles get fresh state (as a fresh engine would give them); what is derived
        per vehicle (speed limits, schedules, fence facts, fence names) is derived again.
        Called by :meth:`process` and :meth:`tick` whenever ``registry.version`` moved."""
        reg = self.registry
        n = len(reg)
        if n > self.state.n:
            st, fresh = self.state, _State.fresh(1)
            for k in st.arrays():
                if not k.startswith("m:"):
                    setattr(st, k, grown(getattr(st, k), n, getattr(fresh, k)[0]))
            for m in st.machines.values():
                for f in ("open", "runval", "runstart", "started", "acc"):
                    setattr(m, f, grown(getattr(m, f), n, 0))
            st.n = n
        self.schedules = Schedules(self.cfg.off_hours.working_hours, reg)
        self._vlimit = np.asarray(reg.speed_limit_kmh, dtype=np.float32)
        self._view_of = None
        self._names.clear()
        self._reg_version = reg.version
        self._no_order_on = orgs_on(reg, self.cfg.no_order.orgs)
        if n > self._card.shape[0]:
            self._card = grown(self._card, n, "")

    # -- public API -------------------------------------------------------------------------

    def process(self, batch: PositionBatch) -> list[AlarmEvent]:
        """Run every point rule over ``batch`` (rows in any order)."""
        n = len(batch)
        if n == 0:
            return []
        if self._reg_version != self.registry.version:
            self.grow()
        if batch.vehicle.min() < 0 or batch.vehicle.max() >= self.state.n:
            raise Misuse("batch.vehicle holds an index outside the registry")
        late = batch.backfill | (batch.ts <= self.state.last_ts[batch.vehicle])
        if late.any():
            live_idx = np.flatnonzero(~late)
            order = live_idx[_vehicle_time_order(batch.vehicle[live_idx], batch.ts[live_idx])]
        else:
            order = _vehicle_time_order(batch.vehicle, batch.ts)
        out: list[AlarmEvent] = []
        if order.size:
            rows = _Rows(batch, order)
            out += self._offline_closes(rows)
            raws = self._run(rows, self.state)
            out += [self.book.apply(r) for r in raws]
            st = self.state
            st.last_ts[rows.vl] = rows.ts[rows.last_i]
            st.last_lat[rows.vl] = rows.lat[rows.last_i]
            st.last_lon[rows.vl] = rows.lon[rows.last_i]
            self._max_ts = max(self._max_ts, int(rows.ts.max()))
        if late.any():
            out += self._backfill(batch, np.flatnonzero(late))
        self.book.prune(self._max_ts - int(self.cfg.orders.lookback_h * 3_600_000))
        return out

    def tick(self, now_ms: int) -> list[AlarmEvent]:
        """Timer rules: open an offline episode for each vehicle silent ``after_s`` or more.

        Only vehicles the registry expects (在用, 封存); an open offline episode of a
        vehicle handed over for disposal closes (``detail.retired``)."""
        if not self.cfg.offline.enabled:
            return []
        if self._reg_version != self.registry.version:
            self.grow()
        st = self.state
        expected = self.registry.expected
        out = []
        for v in np.flatnonzero(st.off_open & ~expected).tolist():
            st.off_open[v] = False
            out.append(
                self.book.apply(
                    Raw(
                        v,
                        "offline",
                        "close",
                        now_ms,
                        0,
                        now_ms,
                        float(st.last_lat[v]),
                        float(st.last_lon[v]),
                        {"retired": True},
                    )
                )
            )
        seen = st.last_ts != _INT_MIN
        due = seen & ~st.off_open & expected
        due &= now_ms - st.last_ts >= int(self.cfg.offline.after_s * 1000)
        for v in np.flatnonzero(due).tolist():
            st.off_open[v] = True
            last = int(st.last_ts[v])
            out.append(
                self.book.apply(
                    Raw(
                        v,
                        "offline",
                        "open",
                        now_ms,
                        last,
                        None,
                        float(st.last_lat[v]),
                        float(st.last_lon[v]),
                        {"last_report": last},
                    )
                )
            )
        return out

    def add_order(self, order: DispatchOrder) -> list[AlarmEvent]:
        """Record a version of an order; return updates of the episodes it covers after the
        fact, or that lose its cover. A known id is replaced: a rejected or cancelled
        version (or ``approved=False``) withdraws the earlier version's excuses and covers."""
        return apply_order(self.orders, self.book, order)

    def driver_card(self, vehicle_id: str, driver_id: str | None, ts: int) -> list[AlarmEvent]:
        """A terminal reported a driver card (JT/T 808 0x0702): ``driver_id`` inserted, or
        None when the card was taken out. Positions processed from now on are checked
        against the covering order's driver (``driver_mismatch``). Returns ``[]``: the
        rule speaks at positions. An unknown vehicle is ignored."""
        if self._reg_version != self.registry.version:
            self.grow()
        v = self.registry.by_id(vehicle_id)
        if v is not None:
            self._card[v] = driver_id or ""
            self._drivers = self._drivers or bool(driver_id)
        return []

    def close_episode(self, alarm_id: str, now_ms: int) -> list[AlarmEvent]:
        """Close an open episode by hand (an operator's decision); ``[]`` if it is not open.

        Emits the same ``close`` event the rule itself would (``ended_at = now_ms``,
        ``detail.closed_by_hand``) and resets that rule's state for the vehicle, so the
        condition must be seen anew — with its debounce — to open a new episode. An
        offline episode of a vehicle that is still silent therefore reopens at the next
        :meth:`tick` (with the same id: its start is still the last report).
        """
        found = next(((k, e) for k, e in self.book.open.items() if e.id == alarm_id), None)
        if found is None:
            return []
        (v, key), prev = found
        st = self.state
        lat, lon = float(st.last_lat[v]), float(st.last_lon[v])
        if np.isnan(lat) or np.isnan(lon):
            lat, lon = prev.lat, prev.lon
        ev = self.book.apply(
            Raw(v, key, "close", now_ms, 0, now_ms, lat, lon, {"closed_by_hand": True})
        )
        if key == "offline":
            st.off_open[v] = False
        else:
            m = st.machine(key)
            m.open[v] = False
            m.runval[v] = False
            m.runstart[v] = 0
            m.started[v] = 0
            m.acc[v] = 0
        return [ev]

    def open_episodes(self) -> list[AlarmEvent]:
        return sorted(self.book.open.values(), key=lambda e: (e.vehicle, e.kind, e.id))

    def state_bytes(self) -> bytes:
        """Everything needed to continue after a restart (orders are persisted by their owner)."""
        buf = io.BytesIO()
        meta = {
            "version": 1,
            "n": self.state.n,
            "max_ts": self._max_ts,
            "vehicle_ids": list(self.registry.ids),
            "book": self.book.to_json(),
            "cards": {
                self.registry.ids[v]: str(self._card[v]) for v in np.flatnonzero(self._card != "")
            },
        }
        arrays = self.state.arrays()
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Continue from :meth:`state_bytes`. Vehicles are matched by id, so a registry that
        gained, lost or reordered vehicles since is fine (new ones start fresh)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
        if meta.get("version") != 1:
            raise Misuse(f"unknown rule state version {meta.get('version')!r}")
        saved_ids: list[str] = meta["vehicle_ids"]
        now = {vid: i for i, vid in enumerate(self.registry.ids)}
        pairs = [(k, now[vid]) for k, vid in enumerate(saved_ids) if vid in now]
        src = np.array([a for a, _ in pairs], dtype=np.int64)
        dst = np.array([b for _, b in pairs], dtype=np.int64)
        self.state = _State.from_arrays(len(self.registry), arrays, src, dst)
        self._max_ts = int(meta["max_ts"])
        self.book.load_json(meta["book"], now)
        for vid, drv in meta.get("cards", {}).items():
            if vid in now:
                self._card[now[vid]] = drv
                self._drivers = True

    def repair_future(self, now_ms: int, max_ahead_ms: int) -> tuple[list[str], list[AlarmEvent]]:
        """Forget what rule state says about times after ``now_ms + max_ahead_ms``.

        Call after :meth:`restore`. State saved by an earlier version that let a
        position dated years ahead through (a GPS week rollover) would keep that
        vehicle blind: every real position would look older than its last one and
        raise no live alarm. Each such vehicle starts afresh — its next position is
        live again — and its open episodes close now (``detail.closed_by_repair``),
        since the machines that would have closed them are reset. Returns the ids of
        the repaired vehicles and the close events; the caller logs and stores them.
        """
        limit = now_ms + max_ahead_ms
        st = self.state
        bad = st.last_ts > limit
        for a in (st.f_prev_ts, st.f_rest_start, st.f_stint):
            bad |= a > limit
        for m in st.machines.values():
            bad |= (m.runstart > limit) | (m.started > limit)
        for (v, _), ev in self.book.open.items():
            if ev.started_at > limit or ev.ts > limit:
                bad[v] = True
        vehicles = np.flatnonzero(bad)
        if vehicles.size == 0:
            return [], []
        fresh = _State.fresh(1)
        for k, arr in st.arrays().items():
            if k.startswith("m:"):
                arr[vehicles] = 0
            else:
                arr[vehicles] = getattr(fresh, k)[0]
        events: list[AlarmEvent] = []
        hit = set(vehicles.tolist())
        for v, key in sorted(k for k in self.book.open if k[0] in hit):
            prev = self.book.open[(v, key)]
            end = max(prev.started_at, min(prev.ts, now_ms))  # never a negative duration
            events.append(
                self.book.apply(
                    Raw(
                        v,
                        key,
                        "close",
                        now_ms,
                        0,
                        end,
                        prev.lat,
                        prev.lon,
                        {"closed_by_repair": True},
                    )
                )
            )
        seen = st.last_ts[st.last_ts != _INT_MIN]
        self._max_ts = int(seen.max()) if seen.size else _INT_MIN
        return [self.registry.ids[v] for v in vehicles.tolist()], events

    # -- internals --------------------------------------------------------------------------

    def _fence_view(self) -> _FenceView | None:
        index = self._fences() if self._fences is not None else None
        if index is None:
            return None
        if index is not self._view_of:
            self._view = fence_view(index, self.registry)
            self._view_of = index
        return self._view

    def _fence_names(self, view: _FenceView, vehicle: int, use: str) -> str:
        key = (id(view.index), int(self.registry.org_index[vehicle]), use)
        got = self._names.get(key)
        if got is None:
            if len(self._names) > 10_000:  # fence sets change rarely; bound it all the same
                self._names.clear()
            got = self._names[key] = fence_names(view.index, self.registry, vehicle, use)
        return got

    def _offline_closes(self, rows: _Rows) -> list[AlarmEvent]:
        st = self.state
        fi = rows.first_i
        hit = st.off_open[rows.veh[fi]]
        if not hit.any():
            return []
        out = []
        for i in fi[hit].tolist():
            v = int(rows.veh[i])
            st.off_open[v] = False
            ts = int(rows.ts[i])
            out.append(
                self.book.apply(
                    Raw(
                        v, "offline", "close", ts, 0, ts, float(rows.lat[i]), float(rows.lon[i]), {}
                    )
                )
            )
        return out

    def _backfill(self, batch: PositionBatch, late_idx: I64) -> list[AlarmEvent]:
        order = late_idx[_vehicle_time_order(batch.vehicle[late_idx], batch.ts[late_idx])]
        rows = _Rows(batch, order)
        book = EpisodeBook(self.registry, critical=self.book.critical, backfill=True)
        events = [book.apply(r) for r in self._run(rows, _State.fresh(self.state.n))]
        last = {
            int(rows.veh[i]): (int(rows.ts[i]), float(rows.lat[i]), float(rows.lon[i]))
            for i in rows.last_i.tolist()
        }
        events += book.close_all(last)
        self.book.closed.extend(book.closed)
        return [e for e in events if e.action == "close"]

    def _run(self, rows: _Rows, st: _State) -> list[Raw]:
        """Every point rule over sorted rows; carried state in ``st``. Raw changes, in order."""
        cfg = self.cfg
        found: list[tuple[int, int, int, Raw]] = []  # (row, rule order, sub order, raw)
        veh, ts, speed = rows.veh, rows.ts, rows.speed
        no_on = cfg.no_order.enabled and bool(self._no_order_on.any())
        needs_geo = (
            cfg.speeding.enabled
            or cfg.out_of_area.enabled
            or cfg.forbidden_zone.enabled
            or cfg.parking_violation.enabled
            or no_on
            or cfg.order_mismatch.enabled
        )
        view = self._fence_view() if needs_geo else None
        geo = geo_rows(view, self.registry, veh, rows.lon, rows.lat)
        need_days = cfg.off_hours.enabled or cfg.parking_violation.enabled
        if need_days:
            day = self.days.rows(ts)
        excuse = self.orders.excuse_bits(self.registry, rows.veh.astype(np.int32), ts)

        def emit(
            rule: int,
            key: str,
            idx: I64,
            action: str,
            started: I64 | None,
            ended: I64 | None,
            detail: Callable[[int], dict[str, Any]],
        ) -> None:
            if idx.size == 0:
                return
            rank = _RANK[action]
            ss = started.tolist() if started is not None else [0] * idx.size
            ee = ended.tolist() if ended is not None else [None] * idx.size
            for i, v, t, s0, e0, la, lo in zip(
                idx.tolist(),
                veh[idx].tolist(),
                ts[idx].tolist(),
                ss,
                ee,
                rows.lat[idx].tolist(),
                rows.lon[idx].tolist(),
                strict=True,
            ):
                found.append((i, rule, rank, Raw(v, key, action, t, s0, e0, la, lo, detail(i))))

        def machine(
            rule: int,
            key: str,
            c: B,
            n_s: float,
            m_s: float,
            open_detail: Callable[[int], dict[str, Any]],
        ) -> tuple[tuple[Any, ...], _Rows, I64 | None] | None:
            """Run one episode machine; emit its opens and closes. Returns the machine's
            per-row results, the rows they are for, and those rows' indices (None: all)."""
            m = st.machine(key)
            if not c.any() and not m.open[rows.vl].any():
                # Nothing true, nothing open: only the run value changes.
                m.runval[rows.vl] = False
                return None
            n_ms, m_ms = round(n_s * 1000), round(m_s * 1000)
            # Only vehicles with a true row or a live run/episode can change; when they are
            # few, run the machine on their rows alone (the others stay closed and false).
            busy = np.zeros(st.n, bool)
            busy[veh[c]] = True
            carried = m.open[rows.vl] | m.runval[rows.vl]
            busy[rows.vl[carried]] = True
            sel: I64 | None = np.flatnonzero(busy[veh])
            assert sel is not None
            if sel.shape[0] * 2 < rows.n:
                r = rows.sub(sel)
                res = _machine(r, m, c[sel], n_ms, m_ms)
            else:
                r, sel = rows, None
                res = _machine(rows, m, c, n_ms, m_ms)
            _, _, opens, closes, rs, started, _ = res
            oi, ci = np.flatnonzero(opens), np.flatnonzero(closes)
            full_o = sel[oi] if sel is not None else oi
            full_c = sel[ci] if sel is not None else ci
            emit(rule, key, full_o, "open", rs[oi], None, open_detail)
            emit(rule, key, full_c, "close", started[ci], rs[ci], lambda i: {})
            return res, r, sel

        def pick(a: Arr, sel: I64 | None) -> Arr:
            return a[sel] if sel is not None else a

        def spread(a: Arr, sel: I64 | None) -> Arr:
            if sel is None:
                return a
            out = np.zeros(rows.n, a.dtype)
            out[sel] = a
            return out

        # speeding -------------------------------------------------------------------------
        if cfg.speeding.enabled:
            sp = cfg.speeding
            vlim = self._vlimit[veh]
            limit = np.minimum(vlim, geo.zone_limit)
            c = speed > limit
            m = st.machine("speeding")
            got = machine(0, "speeding", c, sp.min_duration_s, sp.close_after_s, lambda i: {})
            if got is not None:
                (state, prev, _, _, _, _, boundary), r, sel = got
                sub_speed = pick(speed, sel).astype(np.float64)
                dk = np.minimum(np.rint(sub_speed * 10), 2**_PEAK_BITS - 1).astype(np.int64)
                marker = pick(c, sel) & boundary & ~prev
                carry = m.acc.copy()
                psub = _seg_max(r, dk, marker, carry)
                m.acc[r.vl] = psub[r.last_i]
                step = max(1, round(sp.update_step_kmh * 10))
                upd = state & prev & (psub // step > r.shift(psub, carry) // step)
                peak = spread(psub, sel)

                def sp_detail(i: int) -> dict[str, Any]:
                    return {
                        "limit_kmh": float(limit[i]),
                        "speed_kmh": float(speed[i]),
                        "peak_kmh": int(peak[i]) / 10,
                        "max_speed_kmh": int(peak[i]) / 10,  # the desk's word for the peak
                        "zone": bool(geo.zone_limit[i] < vlim[i]),
                    }

                self._redetail(found, "speeding", sp_detail)
                ui = np.flatnonzero(upd)
                emit(0, "speeding", ui if sel is None else sel[ui], "update", None, None, sp_detail)

        # off_hours ------------------------------------------------------------------------
        if cfg.off_hours.enabled:
            oh = cfg.off_hours
            moving = rows.acc & (speed > np.float32(oh.moving_speed_kmh))
            in_win = self.schedules.in_window(veh, day)
            work = day.workday
            need = np.where(work, _OFF_AFTER, _OFF_REST).astype(np.uint8)
            c = moving & ~(work & in_win) & ((excuse & need) == 0)

            def oh_detail(i: int) -> dict[str, Any]:
                return self.days.detail(day, i)

            machine(1, "off_hours", c, oh.min_duration_s, oh.close_after_s, oh_detail)

        # out_of_area ----------------------------------------------------------------------
        if cfg.out_of_area.enabled and view is not None:
            oa = cfg.out_of_area
            c = view.has_region[veh] & ~geo.in_allowed & ((excuse & _OOA) == 0)
            m = st.machine("out_of_area")
            got = machine(2, "out_of_area", c, oa.min_duration_s, oa.close_after_s, lambda i: {})
            if got is not None:
                (state, prev, _, _, _, _, boundary), r, sel = got
                cs = pick(c, sel)
                lat, lon = pick(rows.lat, sel), pick(rows.lon, sel)
                # distance steps only where they count: rows outside the region
                ci = np.flatnonzero(cs)
                plat = r.shift(lat, st.last_lat)[ci]
                plon = r.shift(lon, st.last_lon)[ci]
                steps = np.zeros(r.n, np.int64)
                steps[ci] = step_m_array(plat, plon, lat[ci], lon[ci])
                marker = cs & boundary & ~prev
                carry = m.acc.copy()
                dsub = _seg_sum(r, steps, marker, carry)
                m.acc[r.vl] = dsub[r.last_i]
                stepm = max(1, round(oa.update_step_km * 1000))
                upd = state & prev & (dsub // stepm > r.shift(dsub, carry) // stepm)
                dist = spread(dsub, sel)

                def oa_detail(i: int) -> dict[str, Any]:
                    return {
                        "distance_km": int(dist[i]) / 1000,
                        "fence_name": self._fence_names(view, int(veh[i]), "allowed_region"),
                    }

                self._redetail(found, "out_of_area", oa_detail)
                ui = np.flatnonzero(upd)
                emit(
                    2,
                    "out_of_area",
                    ui if sel is None else sel[ui],
                    "update",
                    None,
                    None,
                    oa_detail,
                )

        # forbidden_zone -------------------------------------------------------------------
        if cfg.forbidden_zone.enabled and view is not None:
            fz = cfg.forbidden_zone
            ids = view.ids

            def fz_detail(i: int) -> dict[str, Any]:
                f = int(geo.forbidden_fence[i])
                return {"fence": ids[f], "fence_name": view.index.fences[f].name}

            machine(
                3,
                "forbidden_zone",
                geo.in_forbidden,
                fz.min_duration_s,
                fz.close_after_s,
                fz_detail,
            )

        # parking_violation ----------------------------------------------------------------
        if cfg.parking_violation.enabled and view is not None:
            pk = cfg.parking_violation
            parked = ~rows.acc | (speed <= np.float32(pk.parked_speed_kmh))
            away = view.has_lot[veh] & ~geo.in_lot
            night = self.days.night(day, pk.night_start, pk.night_end)
            rest = ~day.workday if pk.on_rest_days else np.zeros(rows.n, bool)
            v_night = night & ((excuse & _PARK_NIGHT) == 0)
            v_rest = rest & ((excuse & _PARK_REST) == 0)
            c = parked & away & (v_night | v_rest)

            def pk_detail(i: int) -> dict[str, Any]:
                return {
                    "reason": "night" if v_night[i] else "rest_day",
                    "fence_name": self._fence_names(view, int(veh[i]), "lot"),
                }

            machine(4, "parking_violation", c, pk.grace_s, pk.close_after_s, pk_detail)

        # terminal_alarm -------------------------------------------------------------------
        ta = cfg.terminal_alarm
        for name, bit in self._bits:
            c = (rows.alarm & np.uint32(1 << bit)) != 0

            def ta_detail(i: int, name: str = name, bit: int = bit) -> dict[str, Any]:
                return {"bit": bit, "name": name}

            machine(5, f"terminal_alarm/{name}", c, 0.0, ta.close_after_s, ta_detail)

        # fatigue --------------------------------------------------------------------------
        if cfg.fatigue.enabled:
            self._fatigue(rows, st, machine)

        # sealed_moving (封存车辆移动) ------------------------------------------------------------
        if cfg.sealed_moving.enabled:
            sm = cfg.sealed_moving
            moving = rows.acc | (speed > np.float32(sm.moving_speed_kmh))
            c = self.registry.sealed[veh] & moving

            def sm_detail(i: int) -> dict[str, Any]:
                return {"speed_kmh": float(speed[i]), "acc": bool(rows.acc[i])}

            machine(7, "sealed_moving", c, sm.min_duration_s, sm.close_after_s, sm_detail)

        # no_order (无单派车) ---------------------------------------------------------------
        cov = self.orders.cover_index(self.registry, rows.veh.astype(np.int32), ts)
        if no_on and view is not None:
            self._no_order(rows, st, view, geo, cov, machine)
        if cfg.order_mismatch.enabled and view is not None:
            self._order_mismatch(rows, st, view, geo, cov, machine)
        if cfg.driver_mismatch.enabled:
            self._driver_mismatch(rows, cov, machine)

        found.sort(key=lambda t: (t[0], t[1], t[2]))
        return [t[3] for t in found]

    def _order_mismatch(
        self,
        rows: _Rows,
        st: _State,
        view: _FenceView,
        geo: _Geo,
        cov: I64,
        machine: Callable[..., Any],
    ) -> None:
        om = self.cfg.order_mismatch
        veh, ts = rows.veh, rows.ts
        listed = self.orders.orders()
        has = cov >= 0
        why = np.zeros(rows.n, np.int8)  # 0: fine; else an index into _MISMATCH
        # the region of the order
        hi = np.flatnonzero(has)
        if hi.size:
            regions = np.array([o.region or "" for o in listed], dtype=object)[cov[hi]]
            for region in sorted(set(regions.tolist()) - {""}):
                sel = hi[regions == region]
                ok = regions_inside(
                    region, rows.lon[sel], rows.lat[sel], om.region_tolerance_km, om.corridor_km
                )
                why[sel[~ok]] = 1
        # the window: a trip (a run of rows away from the lot) under the order
        away = view.has_lot[veh] & ~geo.in_lot
        h = st.machine("order_mismatch.trip")
        boundary = away != rows.shift(away, h.runval)
        j = rows.ffill(boundary)
        rs = np.where(boundary[j], ts[j], h.runstart[veh])
        had = _seg_max(rows, (away & has).astype(np.int64), away & boundary, h.acc)
        li, vl = rows.last_i, rows.vl
        h.runval[vl] = away[li]
        h.runstart[vl] = rs[li]
        h.acc[vl] = had[li]
        pad = round(om.window_tolerance_minutes * 60_000)
        starts = np.array([o.start for o in listed] or [0], np.int64)
        late = away & ~has & (had > 0)
        if late.any():
            late &= self.orders.cover_index(self.registry, veh.astype(np.int32), ts, pad) < 0
        early = away & has & (rs < starts[np.where(has, cov, 0)] - pad)
        why[(why == 0) & late] = 2
        why[(why == 0) & early] = 3
        # the vehicle: out with no order of its own while its organisation's order names another
        other = np.full(rows.n, -1, np.int64)
        if om.vehicle_check:
            grace = round(om.vehicle_grace_s * 1000)
            cand = away & ~has & (ts - rs >= grace)
            if cand.any():
                other = self.orders.cover_index(
                    self.registry, veh.astype(np.int32), ts, by_org=True
                )
                why[(why == 0) & cand & (other >= 0)] = 4
        c = why > 0

        def om_detail(i: int) -> dict[str, Any]:
            k = int(why[i])
            o = listed[int(other[i])] if k == 4 else listed[int(cov[i])] if k != 2 else None
            out: dict[str, Any] = {"reason": _MISMATCH[k], "order": o.id if o else None}
            if k == 1 and o is not None:
                out["region"] = o.region
            if k == 3 and o is not None:
                out["left_at"] = int(rs[i])
            if k == 4 and o is not None:
                out["order_vehicle"] = o.vehicle_id
            return out

        machine(9, "order_mismatch", c, om.min_duration_s, om.close_after_s, om_detail)

    def _driver_mismatch(self, rows: _Rows, cov: I64, machine: Callable[..., Any]) -> None:
        dm = self.cfg.driver_mismatch
        listed = self.orders.orders()
        want = np.array([o.driver_id or "" for o in listed], dtype=object)
        card = self._card[rows.veh]
        has = (cov >= 0) & (card != "") if self._drivers else np.zeros(rows.n, bool)
        c = np.zeros(rows.n, bool)
        hi = np.flatnonzero(has)
        if hi.size:
            w = want[cov[hi]]
            c[hi] = (w != "") & (w != card[hi])

        def dm_detail(i: int) -> dict[str, Any]:
            o = listed[int(cov[i])]
            return {"driver": str(card[i]), "order_driver": o.driver_id, "order": o.id}

        machine(10, "driver_mismatch", c, dm.min_duration_s, dm.close_after_s, dm_detail)

    def _no_order(
        self,
        rows: _Rows,
        st: _State,
        view: _FenceView,
        geo: _Geo,
        cov: I64,
        machine: Callable[..., Any],
    ) -> None:
        no = self.cfg.no_order
        veh, ts = rows.veh, rows.ts
        c = self._no_order_on[veh] & view.has_lot[veh] & ~geo.in_lot & (cov < 0)
        # The trip: a run of such rows; its start and the distance driven since.
        h = st.machine("no_order.trip")
        boundary = c != rows.shift(c, h.runval)
        j = rows.ffill(boundary)
        rs = np.where(boundary[j], ts[j], h.runstart[veh])
        ci = np.flatnonzero(c)
        steps = np.zeros(rows.n, np.int64)
        if ci.size:
            plat = rows.shift(rows.lat, st.last_lat)[ci]
            plon = rows.shift(rows.lon, st.last_lon)[ci]
            steps[ci] = step_m_array(plat, plon, rows.lat[ci], rows.lon[ci])
        dist = _seg_sum(rows, steps, c & boundary, h.acc)
        li, vl = rows.last_i, rows.vl
        h.runval[vl] = c[li]
        h.runstart[vl] = rs[li]
        h.acc[vl] = dist[li]
        min_m = round(no.min_km * 1000)
        min_ms = round(no.min_minutes * 60_000)
        c2 = c & ((dist > min_m) | (ts - rs >= min_ms))

        def no_detail(i: int) -> dict[str, Any]:
            return {
                "left_at": int(rs[i]),
                "distance_km": int(dist[i]) / 1000,
                "fence_name": self._fence_names(view, int(veh[i]), "lot"),
            }

        machine(8, "no_order", c2, 0.0, no.close_after_s, no_detail)

    @staticmethod
    def _redetail(
        found: list[tuple[int, int, int, Raw]], key: str, detail: Callable[[int], dict[str, Any]]
    ) -> None:
        """Fill in the details of the open/close raws of ``key`` once the accumulator is known."""
        for n, (i, r, a, raw) in enumerate(found):
            if raw.key == key:
                found[n] = (
                    i,
                    r,
                    a,
                    Raw(
                        raw.vehicle,
                        raw.key,
                        raw.action,
                        raw.ts,
                        raw.started_at,
                        raw.ended_at,
                        raw.lat,
                        raw.lon,
                        detail(i),
                    ),
                )

    def _fatigue(self, rows: _Rows, st: _State, machine: Callable[..., Any]) -> None:
        fc = self.cfg.fatigue
        ts = rows.ts
        rest_ms = round(fc.rest_s * 1000)
        max_ms = round(fc.max_driving_s * 1000)
        moving = rows.acc & (rows.speed > np.float32(fc.moving_speed_kmh))
        still = ~moving
        prev_ts = rows.shift(ts, st.f_prev_ts)
        # Start of the current run of still rows.
        prev_still = rows.shift(still, st.f_still)
        b = still & ~prev_still
        j = rows.ffill(b)
        rest_start = np.where(b[j], ts[j], st.f_rest_start[rows.veh])
        rested = (ts - prev_ts >= rest_ms) | (still & (ts - rest_start >= rest_ms))
        trig = moving | rested
        k = rows.ffill(trig)
        active = np.where(trig[k], moving[k], st.f_active[rows.veh])
        prev_active = rows.shift(active, st.f_active)
        starts = moving & (rested | ~prev_active)
        s = rows.ffill(starts)
        stint = np.where(starts[s], ts[s], st.f_stint[rows.veh])
        c = active & (ts - stint > max_ms)
        li, vl = rows.last_i, rows.vl
        st.f_prev_ts[vl] = ts[li]
        st.f_still[vl] = still[li]
        st.f_rest_start[vl] = rest_start[li]
        st.f_active[vl] = active[li]
        st.f_stint[vl] = stint[li]

        def fa_detail(i: int) -> dict[str, Any]:
            return {"stint_started_at": int(stint[i]), "driving_s": (int(ts[i] - stint[i])) / 1000}

        machine(6, "fatigue", c, 0.0, 0.0, fa_detail)
