"""Debounced enter/exit transitions, per vehicle, for one yes/no fence question.

One :class:`Debounce` answers one question ("is the vehicle inside its allowed region?",
"inside any forbidden place?", ...). Feed it, batch after batch, the answer for each
position; it returns the confirmed changes.

Debounce rule. The observations of a vehicle form *runs* of equal answers. A run
*qualifies* at its first point that is the ``min_points``-th of the run, or that lies at
least ``min_seconds`` after the run's first point. The confirmed state of the vehicle is
the answer of the last run that qualified; a transition is emitted at the point where a
run qualifies with an answer different from the confirmed state. GPS jitter at a
boundary makes short runs that never qualify, so it never flaps.

The first qualifying run of a vehicle (state unknown) emits a transition marked
``initial``: a vehicle that first shows up outside its region gets an "exited" transition
with ``initial=True``, which the rules engine may treat as it likes.

Rows must be sorted by (vehicle, ts). State carries across rows and batches. A row whose
``ts`` is not later than the vehicle's last processed point (a duplicate, or a backfill
older than what was already processed) is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleet.errors import Misuse

__all__ = ["Debounce", "Transitions", "debounce_reference"]

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]
_NO_TS = np.iinfo(np.int64).min


@dataclass(frozen=True, slots=True)
class Transitions:
    """Confirmed transitions, in input order: ``row`` indexes the batch given to ``update``."""

    row: I64
    vehicle: I32
    ts: I64
    entered: B  # True: entered (answer became yes); False: exited
    initial: B  # True: first confirmed state of the vehicle (no previous state)

    def __len__(self) -> int:
        return int(self.row.shape[0])

    @classmethod
    def empty(cls) -> Transitions:
        return cls(
            np.empty(0, np.int64),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            np.empty(0, bool),
            np.empty(0, bool),
        )


class Debounce:
    """Per-vehicle debounce state for one fence question (arrays indexed by vehicle)."""

    def __init__(
        self, n_vehicles: int, *, min_points: int = 3, min_seconds: float | None = 60.0
    ) -> None:
        if min_points < 1:
            raise Misuse("min_points must be >= 1")
        if min_seconds is not None and min_seconds < 0:
            raise Misuse("min_seconds must be >= 0 or None")
        self.min_points = int(min_points)
        # No time rule: a threshold no difference of int64 ms can reach.
        self._min_ms = np.iinfo(np.int64).max if min_seconds is None else round(min_seconds * 1000)
        self.state = np.full(0, -1, dtype=np.int8)  # confirmed: -1 unknown, 0 no, 1 yes
        self.last_value = np.full(0, -1, dtype=np.int8)  # answer of the current run
        self.run_count = np.zeros(0, dtype=np.int64)  # points in the current run
        self.run_start = np.zeros(0, dtype=np.int64)  # ts of the current run's first point
        self.last_ts = np.zeros(0, dtype=np.int64)  # ts of the last processed point
        self.grow(n_vehicles)

    def grow(self, n_vehicles: int) -> None:
        """Make room for vehicles ``0..n_vehicles-1`` (new ones start unknown)."""
        extra = n_vehicles - self.state.shape[0]
        if extra <= 0:
            return
        self.state = np.r_[self.state, np.full(extra, -1, np.int8)]
        self.last_value = np.r_[self.last_value, np.full(extra, -1, np.int8)]
        self.run_count = np.r_[self.run_count, np.zeros(extra, np.int64)]
        self.run_start = np.r_[self.run_start, np.zeros(extra, np.int64)]
        self.last_ts = np.r_[self.last_ts, np.full(extra, _NO_TS, np.int64)]

    def update(
        self, vehicle: npt.ArrayLike, ts: npt.ArrayLike, inside: npt.ArrayLike
    ) -> Transitions:
        """Feed one batch (sorted by vehicle, ts; ts in epoch ms); return its transitions."""
        v_all = np.asarray(vehicle, dtype=np.int32)
        t_all = np.asarray(ts, dtype=np.int64)
        x_all = np.asarray(inside, dtype=bool).astype(np.int8)
        n = v_all.shape[0]
        if t_all.shape != (n,) or x_all.shape != (n,):
            raise Misuse("vehicle, ts and inside must be 1-D arrays of one length")
        if n == 0:
            return Transitions.empty()
        if v_all.min() < 0 or v_all.max() >= self.state.shape[0]:
            raise Misuse("vehicle index out of range: call grow() after registering vehicles")
        dv = np.diff(v_all)
        if np.any((dv < 0) | ((dv == 0) & (np.diff(t_all) < 0))):
            raise Misuse("rows must be sorted by (vehicle, ts)")

        new_v = np.r_[True, dv != 0]
        prev_row_t = np.where(new_v, _NO_TS, np.r_[_NO_TS, t_all[:-1]])
        prev_t = np.maximum(self.last_ts[v_all], prev_row_t)
        rows = np.flatnonzero(t_all > prev_t)
        if rows.size == 0:
            return Transitions.empty()
        v, t, x = v_all[rows], t_all[rows], x_all[rows]
        m = rows.size
        first_v = np.r_[True, v[1:] != v[:-1]]
        last_v = np.r_[v[1:] != v[:-1], True]

        prev_x = np.where(first_v, self.last_value[v], np.r_[np.int8(-1), x[:-1]])
        new_run = x != prev_x
        idx = np.arange(m)
        seg = np.maximum.accumulate(np.where(new_run | first_v, idx, 0))
        carried = ~new_run[seg]  # segment continues the run carried from earlier batches
        count = idx - seg + 1 + np.where(carried, self.run_count[v], 0)
        start = np.where(carried, self.run_start[v], t[seg])
        qual = (count >= self.min_points) | (t - start >= self._min_ms)
        first_qual = qual & ((seg == idx) | ~np.r_[False, qual[:-1]])

        cand = np.flatnonzero(first_qual)
        cv, cx = v[cand], x[cand]
        c_first = np.r_[True, cv[1:] != cv[:-1]] if cand.size else np.empty(0, bool)
        c_last = np.r_[cv[1:] != cv[:-1], True] if cand.size else np.empty(0, bool)
        prev_state = np.where(c_first, self.state[cv], np.r_[np.int8(-1), cx[:-1]])
        fire = cx != prev_state

        # carry state to the next batch
        self.state[cv[c_last]] = cx[c_last]
        lv = v[last_v]
        self.last_value[lv] = x[last_v]
        self.run_count[lv] = np.minimum(count[last_v], np.iinfo(np.int32).max)
        self.run_start[lv] = start[last_v]
        self.last_ts[lv] = t[last_v]

        hit = cand[fire]
        return Transitions(
            row=rows[hit].astype(np.int64),
            vehicle=v[hit].astype(np.int32),
            ts=t[hit],
            entered=x[hit] == 1,
            initial=prev_state[fire] == -1,
        )


def debounce_reference(
    batches: list[tuple[list[int], list[int], list[bool]]],
    *,
    min_points: int,
    min_seconds: float | None,
) -> list[list[tuple[int, int, int, bool, bool]]]:
    """Scalar reference of :class:`Debounce`: per batch, (row, vehicle, ts, entered, initial)."""
    min_ms = None if min_seconds is None else round(min_seconds * 1000)
    state: dict[int, int] = {}
    run: dict[int, tuple[int, int, int]] = {}  # vehicle -> (value, count, start_ts)
    last: dict[int, int] = {}
    out: list[list[tuple[int, int, int, bool, bool]]] = []
    for vehicles, tss, insides in batches:
        events: list[tuple[int, int, int, bool, bool]] = []
        for row, (veh, ts, ins) in enumerate(zip(vehicles, tss, insides, strict=True)):
            if veh in last and ts <= last[veh]:
                continue
            last[veh] = ts
            val = int(ins)
            value, count, start = run.get(veh, (-1, 0, ts))
            if val == value:
                count += 1
            else:
                value, count, start = val, 1, ts
            run[veh] = (value, count, start)
            qualifies = count >= min_points or (min_ms is not None and ts - start >= min_ms)
            cur = state.get(veh, -1)
            if qualifies and val != cur:
                events.append((row, veh, ts, val == 1, cur == -1))
                state[veh] = val
        out.append(events)
    return out
