"""Dispatch orders (派车单) without a database: the state machine, the approval chain, trips.

Pure (no clock, no I/O); :mod:`store.orders` keeps the orders, :mod:`web.orders_api`
serves them.

States and the actions that move an order (the whole table is :data:`TRANSITIONS`;
anything not in it is refused with :class:`BadTransition`)::

    (new) ─request─▶ pending ─approve─▶ approved ─dispatch─▶ dispatched
                        │ (more steps: stays pending)                │
                        └─reject─▶ rejected             ┌─── out ◀──┤ out
                                                    back │           │ trip (manual)
                                                         └─▶ returned ◀┘ ─complete─▶ completed
    pending / approved / dispatched ─cancel─▶ cancelled

    补单 (late): (new) ─emergency─▶ dispatched, ``late`` and not yet approved; its request is
    filed afterwards: ``late_approve`` keeps the state (dispatched, out, returned or completed)
    and makes it approved; ``late_reject`` makes it rejected.

The approval chain (``[web.orders] chain``, per organisation ``[web.orders.chains]``) names
steps; who may decide a step (:func:`step_approver_orgs`):

    unit_head   a user with the ``approver`` duty in the order's own organisation
    office      a user with the ``approver`` duty in an organisation above it (its parent
                first; any ancestor) — for an order of the top organisation, the top itself

A user never decides a step of an order they requested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ACTIONS",
    "DUTIES",
    "STATES",
    "STATES_IN_FORCE",
    "STEPS",
    "TRANSITIONS",
    "BadTransition",
    "OrderFlowConfig",
    "Trip",
    "chain_for",
    "derive_trip",
    "haversine_m",
    "step_approver_orgs",
    "track_km",
    "track_km_scalar",
    "transition",
]

STATES: tuple[str, ...] = (
    "pending",
    "approved",
    "dispatched",
    "out",
    "returned",
    "completed",
    "rejected",
    "cancelled",
)
#: The states in which an order covers its vehicle's trips (the rules' excuse, the
#: reports' coverage, the costs' rest-day check): approved, and everything after it.
STATES_IN_FORCE: frozenset[str] = frozenset(
    {"approved", "dispatched", "out", "returned", "completed"}
)
#: What an order may be asked to do. ``request``/``emergency`` start from ``NEW``.
ACTIONS: tuple[str, ...] = (
    "request",
    "emergency",
    "approve",
    "reject",
    "dispatch",
    "out",
    "back",
    "trip",
    "complete",
    "cancel",
    "late_approve",
    "late_reject",
)
NEW = "new"  # the state of an order that does not exist yet
DUTIES: tuple[str, ...] = ("requester", "approver", "dispatcher")
STEPS: tuple[str, ...] = ("unit_head", "office")
TERMINAL: frozenset[str] = frozenset({"completed", "rejected", "cancelled"})

#: (state, action) -> next state. Explicit: every allowed move is a row here.
TRANSITIONS: Mapping[tuple[str, str], str] = {
    (NEW, "request"): "pending",
    (NEW, "emergency"): "dispatched",
    # the last step of the chain approves; earlier steps keep it pending
    ("pending", "approve"): "approved",
    ("pending", "reject"): "rejected",
    ("pending", "cancel"): "cancelled",
    ("approved", "dispatch"): "dispatched",
    ("approved", "cancel"): "cancelled",
    ("dispatched", "out"): "out",
    ("dispatched", "trip"): "returned",
    ("dispatched", "cancel"): "cancelled",
    ("out", "back"): "returned",
    ("out", "trip"): "returned",
    ("returned", "trip"): "returned",  # a dispatcher corrects the recorded trip
    ("returned", "complete"): "completed",
    # 补单: the request of an emergency dispatch, decided while the trip goes on or after it
    ("dispatched", "late_approve"): "dispatched",
    ("out", "late_approve"): "out",
    ("returned", "late_approve"): "returned",
    ("completed", "late_approve"): "completed",
    ("dispatched", "late_reject"): "rejected",
    ("out", "late_reject"): "rejected",
    ("returned", "late_reject"): "rejected",
    ("completed", "late_reject"): "rejected",
}


class BadTransition(ValueError):
    """The order's state does not allow the action (the API answers 409)."""

    def __init__(self, state: str, action: str) -> None:
        super().__init__(f"an order in state {state!r} cannot {action}")
        self.state = state
        self.action = action


def transition(state: str, action: str) -> str:
    """The state after ``action``; :class:`BadTransition` when the table has no such row."""
    nxt = TRANSITIONS.get((state, action))
    if nxt is None:
        raise BadTransition(state, action)
    return nxt


Step = Literal["unit_head", "office"]


class OrderFlowConfig(BaseModel):
    """``[web.orders]``: the approval chain, the trip sweeper and the 补单 limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain: list[Step] = Field(
        default_factory=lambda: list[Step](["unit_head", "office"]),
        min_length=1,
        description="approval steps of a request, in order (unit_head: the unit's own "
        "approver; office: an approver of an organisation above it)",
    )
    chains: dict[str, list[Step]] = Field(
        default_factory=dict,
        description="per organisation id: its own chain (applies to its subtree unless a "
        "lower organisation names another)",
    )
    tolerance_min: int = Field(
        60, ge=0, le=24 * 60, description="minutes before/after the window a trip is looked for"
    )
    late_hours: int = Field(
        24,
        ge=1,
        le=24 * 7,
        description="补单: hours after the dispatch within which its request is filed and decided",
    )
    sweep_interval_s: float = Field(
        60.0, gt=0, le=3600, description="how often dispatched orders are matched with GPS"
    )

    @field_validator("chains")
    @classmethod
    def _non_empty(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for org, steps in v.items():
            if not steps:
                raise ValueError(f"chains.{org}: name at least one step")
        return v


def chain_for(cfg: OrderFlowConfig, ancestry: Sequence[str]) -> list[str]:
    """The chain of an order of ``ancestry[0]`` (its organisation, then parent, …, top):
    the nearest organisation with its own chain, else the default."""
    for org in ancestry:
        if org in cfg.chains:
            return list(cfg.chains[org])
    return list(cfg.chain)


def step_approver_orgs(step: str, ancestry: Sequence[str]) -> tuple[str, ...]:
    """Organisations whose approvers may decide ``step`` of an order of ``ancestry[0]``."""
    if step == "unit_head":
        return (ancestry[0],)
    if step == "office":
        return tuple(ancestry[1:]) if len(ancestry) > 1 else (ancestry[0],)
    raise ValueError(f"unknown approval step {step!r}")


# -- trips from GPS --------------------------------------------------------------------------

EARTH_M = 6_371_008.8  # mean Earth radius (IUGG)

F64 = npt.NDArray[np.float64]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points (degrees)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(a)))


def track_km_scalar(lon: Sequence[float], lat: Sequence[float]) -> float:
    """Kilometres along a track, one segment at a time (the reference of :func:`track_km`)."""
    total = 0.0
    for i in range(1, len(lon)):
        total += haversine_m(lon[i - 1], lat[i - 1], lon[i], lat[i])
    return total / 1000.0


def track_km(lon: npt.ArrayLike, lat: npt.ArrayLike) -> float:
    """Kilometres along a track (haversine per segment, vectorized)."""
    x = np.radians(np.asarray(lon, dtype=np.float64))
    y = np.radians(np.asarray(lat, dtype=np.float64))
    if x.size < 2:
        return 0.0
    dp = np.diff(y)
    dl = np.diff(x)
    a = np.sin(dp / 2) ** 2 + np.cos(y[:-1]) * np.cos(y[1:]) * np.sin(dl / 2) ** 2
    return float(np.sum(2 * EARTH_M * np.arcsin(np.minimum(1.0, np.sqrt(a))))) / 1000.0


@dataclass(frozen=True, slots=True)
class Trip:
    """出车/回车 found in a track: ``out_at`` the first point outside the lot, ``back_at`` the
    first point inside it again after the last point outside (None: not back yet)."""

    out_at: int
    back_at: int | None
    km: float
    first: int  # index of the out point in the track given
    last: int  # index of the back point (or the last point, not back yet)


def derive_trip(
    ts: npt.ArrayLike,
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    inside: npt.ArrayLike,
    start: int,
    end: int,
    tolerance_ms: int,
) -> Trip | None:
    """The trip of an order with window ``[start, end]`` in a vehicle's track.

    ``ts`` ascending epoch ms, ``inside`` whether each point lies in the vehicle's lot.
    Only points in ``[start - tolerance, end + tolerance]`` count. Out: the first point
    outside the lot that follows a point inside (or the first point, when the vehicle was
    already away at the window's start). Back: the first point inside after the last
    point outside, if the vehicle is in the lot at the end. km: along the track from out
    to back (or to the last point). None: the vehicle never left.
    """
    t = np.asarray(ts, dtype=np.int64)
    inn = np.asarray(inside, dtype=bool)
    x = np.asarray(lon, dtype=np.float64)
    y = np.asarray(lat, dtype=np.float64)
    if not (t.shape == inn.shape == x.shape == y.shape):
        raise ValueError("ts, lon, lat and inside must have the same length")
    if t.size > 1 and np.any(np.diff(t) < 0):
        raise ValueError("ts must be ascending")
    lo = int(np.searchsorted(t, start - tolerance_ms, side="left"))
    hi = int(np.searchsorted(t, end + tolerance_ms, side="right"))
    if hi <= lo:
        return None
    w = inn[lo:hi]
    outside = np.flatnonzero(~w)
    if outside.size == 0:
        return None
    # inside at the window's start: the first point outside is the exit
    first = int(outside[0])
    last_out = int(outside[-1])
    back = last_out + 1 if last_out + 1 < w.size else None
    stop = back if back is not None else w.size - 1
    a, b = lo + first, lo + stop
    km = track_km(x[a : b + 1], y[a : b + 1])
    return Trip(
        out_at=int(t[a]),
        back_at=int(t[lo + back]) if back is not None else None,
        km=round(km, 3),
        first=a,
        last=b,
    )
