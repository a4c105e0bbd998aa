"""Dispatch orders: the state machine, the approval chain, trips from GPS, and the store on
SQLite and PostgreSQL (with the copy of the earlier table)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from store.config import StoreConfig
from store.orders import OrderStore
from store.orders_core import (
    ACTIONS,
    NEW,
    STATES,
    TRANSITIONS,
    BadTransition,
    OrderFlowConfig,
    chain_for,
    derive_trip,
    haversine_m,
    step_approver_orgs,
    track_km,
    track_km_scalar,
    transition,
)

# Written out again by hand (not derived from the table): a change to the table that is not
# also made here fails the test.
EXPECTED = {
    ("new", "request"): "pending",
    ("new", "emergency"): "dispatched",
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
    ("returned", "trip"): "returned",
    ("returned", "complete"): "completed",
    ("dispatched", "late_approve"): "dispatched",
    ("out", "late_approve"): "out",
    ("returned", "late_approve"): "returned",
    ("completed", "late_approve"): "completed",
    ("dispatched", "late_reject"): "rejected",
    ("out", "late_reject"): "rejected",
    ("returned", "late_reject"): "rejected",
    ("completed", "late_reject"): "rejected",
}


def test_the_table_is_the_one_specified() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize("state", [NEW, *STATES])
@pytest.mark.parametrize("action", ACTIONS)
def test_every_transition_is_allowed_or_refused(state: str, action: str) -> None:
    if (state, action) in EXPECTED:
        assert transition(state, action) == EXPECTED[(state, action)]
    else:
        with pytest.raises(BadTransition, match=f"state '{state}' cannot {action}"):
            transition(state, action)


def test_rejected_and_cancelled_are_final_and_nothing_returns_to_pending() -> None:
    for s in ("rejected", "cancelled"):
        assert not [a for a in ACTIONS if (s, a) in TRANSITIONS]
    assert [k for k, v in TRANSITIONS.items() if v == "pending"] == [("new", "request")]
    # every state is reachable from new
    seen, todo = {NEW}, [NEW]
    while todo:
        s = todo.pop()
        for (a, _), b in TRANSITIONS.items():
            if a == s and b not in seen:
                seen.add(b)
                todo.append(b)
    assert seen == {NEW, *STATES}


def test_chain_per_organisation_and_who_decides_a_step() -> None:
    cfg = OrderFlowConfig(chains={"ws": ["office"], "ws-police": ["unit_head"]})
    assert chain_for(cfg, ["yc-unit", "yc", "city"]) == ["unit_head", "office"]
    assert chain_for(cfg, ["ws-unit", "ws", "city"]) == ["office"]  # inherited from ws
    assert chain_for(cfg, ["ws-police", "ws", "city"]) == ["unit_head"]
    assert step_approver_orgs("unit_head", ["u", "ws", "city"]) == ("u",)
    assert step_approver_orgs("office", ["u", "ws", "city"]) == ("ws", "city")
    assert step_approver_orgs("office", ["city"]) == ("city",)
    with pytest.raises(ValueError):
        step_approver_orgs("mayor", ["city"])
    with pytest.raises(ValueError):
        OrderFlowConfig(chains={"ws": []})
    with pytest.raises(ValueError):
        OrderFlowConfig(chain=["mayor"])  # type: ignore[list-item]


# -- km and trips ----------------------------------------------------------------------------


def test_track_km_agrees_with_its_scalar_twin_on_random_tracks() -> None:
    rng = random.Random(16)
    for _ in range(200):
        n = rng.randint(0, 60)
        lon = [106.6 + rng.uniform(-0.5, 0.5) for _ in range(n)]
        lat = [30.4 + rng.uniform(-0.5, 0.5) for _ in range(n)]
        if n and rng.random() < 0.2:  # repeated points, far jumps
            lon[rng.randrange(n)] = lon[0]
            lat[-1] = -lat[-1]
        assert track_km(np.array(lon), np.array(lat)) == pytest.approx(
            track_km_scalar(lon, lat), rel=1e-9, abs=1e-9
        )


def test_haversine_against_a_known_distance() -> None:
    # one degree of latitude on the mean sphere: 111.195 km
    assert haversine_m(106.0, 30.0, 106.0, 31.0) == pytest.approx(111_195, abs=1)
    assert haversine_m(106.0, 30.0, 106.0, 30.0) == 0.0


T0 = 1_764_034_200_000
MIN = 60_000


def _track(spec: list[tuple[int, bool]]) -> tuple[Any, Any, Any, Any]:
    """Points a minute apart: (minute, inside); outside points walk east 0.01° a minute."""
    ts = np.array([T0 + m * MIN for m, _ in spec], dtype=np.int64)
    inside = np.array([i for _, i in spec], dtype=bool)
    lon = np.array([106.6 + (0 if i else 0.01 * m) for m, i in spec])
    lat = np.full(len(spec), 30.4)
    return ts, lon, lat, inside


def test_a_trip_is_the_first_exit_and_the_last_reentry_in_the_window() -> None:
    spec = [(m, not (10 <= m < 20 or 30 <= m < 40)) for m in range(0, 60)]
    ts, lon, lat, inside = _track(spec)
    trip = derive_trip(ts, lon, lat, inside, T0 + 5 * MIN, T0 + 50 * MIN, 0)
    assert trip is not None
    assert trip.out_at == T0 + 10 * MIN and trip.back_at == T0 + 40 * MIN
    expect = track_km_scalar(list(lon[10:41]), list(lat[10:41]))
    assert trip.km == pytest.approx(expect, abs=1e-3) and trip.km > 10
    assert (trip.first, trip.last) == (10, 40)
    # the window's tolerance: an exit before the window counts only within it
    assert derive_trip(ts, lon, lat, inside, T0 + 15 * MIN, T0 + 50 * MIN, 0).out_at == (  # type: ignore[union-attr]
        T0 + 15 * MIN  # already away at the window's start
    )
    late = derive_trip(ts, lon, lat, inside, T0 + 15 * MIN, T0 + 50 * MIN, 5 * MIN)
    assert late is not None and late.out_at == T0 + 10 * MIN


def test_no_exit_no_trip_and_not_back_yet() -> None:
    ts, lon, lat, inside = _track([(m, True) for m in range(30)])
    assert derive_trip(ts, lon, lat, inside, T0, T0 + 30 * MIN, 0) is None
    ts, lon, lat, inside = _track([(m, m < 5) for m in range(30)])
    trip = derive_trip(ts, lon, lat, inside, T0, T0 + 30 * MIN, 0)
    assert trip is not None and trip.out_at == T0 + 5 * MIN and trip.back_at is None
    assert trip.last == 29
    empty = np.array([], dtype=np.int64)
    assert derive_trip(empty, empty, empty, empty.astype(bool), T0, T0 + 1, 0) is None
    with pytest.raises(ValueError):
        derive_trip(ts[:3], lon, lat, inside, T0, T0 + 1, 0)
    with pytest.raises(ValueError):
        derive_trip(ts[::-1], lon, lat, inside, T0, T0 + 1, 0)


# -- the store --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OrderStore]:
    if request.param == "sqlite":
        s = OrderStore(StoreConfig(), path=str(tmp_path / "orders.db"))
    else:
        s = OrderStore(request.getfixturevalue("pg_config"))
    await s.open()
    yield s
    await s.close()


def order(oid: str, org: str = "ws", **kw: Any) -> dict[str, Any]:
    return {
        "org": org,
        "id": oid,
        "state": "pending",
        "type": "local",
        "start": T0,
        "end": T0 + 3_600_000,
        "vehicle": None,
        "driver": None,
        "requester": "keyuan",
        "created_at": T0,
        "approved": False,
        "purpose": "开会",
        **kw,
    }


async def test_add_get_list_and_filters(store: OrderStore) -> None:
    assert await store.add(order("A"))
    assert not await store.add(order("A"))  # taken in its organisation
    assert await store.add(order("A", org="yc", requester="li", created_at=T0 + 1))
    await store.add(
        order(
            "B",
            state="dispatched",
            vehicle="V1",
            driver="D1",
            created_at=T0 + 2,
            start=T0 + 7_200_000,
            end=T0 + 9_000_000,
        )
    )
    got = await store.get("ws", "A")
    assert got is not None and got["purpose"] == "开会" and got["version"] == 1
    assert [o["org"] for o in await store.by_id("A")] == ["ws", "yc"]
    assert [o["id"] for o in await store.select()] == ["A", "A", "B"]
    assert [o["id"] for o in await store.select(orgs=["yc"])] == ["A"]
    assert await store.select(orgs=[]) == []
    assert [o["id"] for o in await store.select(states=["dispatched"])] == ["B"]
    assert [o["id"] for o in await store.select(from_ms=T0 + 3_600_001)] == ["B"]
    assert [o["id"] for o in await store.select(to_ms=T0 + 7_200_000)] == ["A", "A"]
    assert [o["org"] for o in await store.select(requester="li")] == ["yc"]
    assert [o["id"] for o in await store.select(vehicle="V1")] == ["B"]
    assert [o["id"] for o in await store.select(limit=1)] == ["A"]
    held = await store.holding(T0 + 8_000_000, T0 + 8_000_001, ["dispatched", "out"])
    assert [o["id"] for o in held] == ["B"]
    assert await store.holding(T0, T0 + 1, ["dispatched"]) == []


async def test_update_is_a_compare_and_set(store: OrderStore) -> None:
    await store.add(order("A"))
    a = await store.get("ws", "A")
    b = await store.get("ws", "A")
    assert a is not None and b is not None
    won = await store.update({**a, "state": "approved", "approved": True})
    assert won is not None and won["version"] == 2
    assert await store.update({**b, "state": "rejected"}) is None  # read before: refused
    now = await store.get("ws", "A")
    assert now is not None and now["state"] == "approved" and now["version"] == 2
    assert [o["id"] for o in await store.select(states=["approved"])] == ["A"]


async def test_concurrent_decisions_one_wins(store: OrderStore) -> None:
    await store.add(order("A"))
    a = await store.get("ws", "A")
    assert a is not None
    results = await asyncio.gather(
        *(store.update({**a, "state": s}) for s in ("approved", "rejected", "cancelled"))
    )
    assert sum(r is not None for r in results) == 1


async def test_put_many_overwrites_only_its_own_organisation(store: OrderStore) -> None:
    await store.add(order("C", org="yc", type="local"))
    await store.put_many([order("C", org="ws", type="holiday"), order("D", type="overnight")])
    await store.put_many([order("C", org="ws", type="overnight")])
    yc, ws = await store.get("yc", "C"), await store.get("ws", "C")
    assert yc is not None and yc["type"] == "local"
    assert ws is not None and ws["type"] == "overnight" and ws["version"] == 2


async def test_the_earlier_table_is_copied_once(store: OrderStore) -> None:
    legacy = [
        {
            "org": "ws",
            "id": "O-1",
            "vehicle": "V2",
            "type": "holiday",
            "start": T0,
            "end": T0 + 1,
            "reason": "接待",
            "created_by": "ws-op",
            "created_at": T0,
            "approved": True,
            "approved_by": "ws-op",
            "approved_at": T0 + 5,
        },
        {
            "org": "ws",
            "id": "O-2",
            "vehicle": "V2",
            "type": "local",
            "start": T0,
            "end": T0 + 1,
            "reason": "",
            "created_by": "ws-op",
            "created_at": T0 + 1,
            "approved": False,
            "approved_by": None,
            "approved_at": None,
        },
    ]
    assert await store.migrate(legacy) == 2
    assert await store.migrate(legacy) == 0  # once: the table is no longer empty
    o1, o2 = await store.get("ws", "O-1"), await store.get("ws", "O-2")
    assert o1 is not None and o2 is not None
    assert (o1["state"], o1["approved"], o1["approved_by"], o1["approved_at"]) == (
        "approved",
        True,
        "ws-op",
        T0 + 5,
    )
    assert o1["purpose"] == "接待" and o1["source"] == "entry" and o1["requester"] == "ws-op"
    assert o1["approvals"][0]["by"] == "ws-op"
    assert (o2["state"], o2["approved"], o2["approvals"]) == ("pending", False, [])
