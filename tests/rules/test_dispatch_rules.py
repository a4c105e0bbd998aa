"""Dispatch orders against the rules (#16): new order fields, versions that replace each
other, the covering-order lookup, and the no_order rule (无单派车)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetwatch.errors import Misuse
from rules.config import RulesConfig
from rules.orders import DispatchOrder, OrderBook
from rules.reference import ReferenceEngine
from rules.replay import episodes, replay
from tests.rules.conftest import local_ms, make_registry
from tests.rules.test_scenarios import FENCES, IN_LOT, TOWN, batch, engine, of, trip

WED = (2026, 11, 25)
NO_ORDER = RulesConfig.model_validate({"no_order": {"orgs": ["bureau"]}})


def day_out(v: int, start: int, minutes: float, **kw: Any) -> list[dict[str, list[Any]]]:
    """In the lot 5 minutes, out in town ``minutes``, back in the lot 20 minutes."""
    back = start + 5 * 60_000 + int(minutes * 60_000) + 30_000
    return [
        trip(v, start, 5, at=IN_LOT, speed=0, acc=False, move=False),
        trip(v, start + 5 * 60_000 + 30_000, minutes, at=TOWN, **kw),
        trip(v, back, 20, at=IN_LOT, speed=0, acc=False, move=False),
    ]


# -- the order itself ---------------------------------------------------------------------------


def test_old_callers_get_an_approved_order_without_driver_or_region() -> None:
    o = DispatchOrder("o1", "v0", "local", 1, 2)
    assert (o.driver_id, o.region, o.state, o.valid) == (None, None, "approved", True)
    assert not DispatchOrder("o1", "v0", "local", 1, 2, approved=False).valid
    for state in ("pending", "rejected", "cancelled"):
        assert not DispatchOrder("o1", "v0", "local", 1, 2, state=state).valid
    for state in ("dispatched", "out", "returned", "completed"):
        assert DispatchOrder("o1", "v0", "local", 1, 2, state=state).valid


@pytest.mark.parametrize(
    "kw",
    [
        {"state": "lost"},
        {"region": "county"},
        {"region": "county:"},
        {"region": "province:四川"},
        {"region": "out_of_city:"},
    ],
)
def test_bad_state_or_region_is_refused_with_a_message(kw: dict[str, Any]) -> None:
    with pytest.raises(Misuse, match=r"state|region"):
        DispatchOrder("o1", "v0", "local", 1, 2, **kw)


def test_a_later_version_replaces_the_earlier_one() -> None:
    book = OrderBook()
    a = DispatchOrder("o1", "v0", "local", 100, 200)
    assert book.add(a) and book.excuses_at("v0", 150)
    assert not book.add(a)  # the same version again: nothing changes
    b = DispatchOrder("o1", "v0", "local", 300, 400)
    assert book.add(b)
    assert len(book) == 1 and not book.excuses_at("v0", 150) and book.excuses_at("v0", 350)
    assert book.put(DispatchOrder("o1", "v0", "local", 300, 400, state="cancelled")) == b
    assert len(book) == 0 and not book.excuses_at("v0", 350)
    assert book.covering("v0", 350) is None


# -- the covering order, vectorized and scalar --------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 30), st.integers(0, 5)),
        max_size=8,
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(-10, 90)), min_size=1, max_size=40),
    st.sampled_from([0, 5]),
)
def test_cover_index_agrees_with_covering(
    orders: list[tuple[int, int, int, int]], rows: list[tuple[int, int]], pad: int
) -> None:
    reg = make_registry(3)  # v3 is not registered: its orders apply to nothing
    book = OrderBook(DispatchOrder(f"o{j}", f"v{v}", "local", a, a + d) for v, a, d, j in orders)
    veh = np.array([v for v, _ in rows if v < 3], np.int32)
    ts = np.array([t for v, t in rows if v < 3], np.int64)
    got = book.cover_index(reg, veh, ts, pad)
    listed = book.orders()
    for k in range(veh.shape[0]):
        want = book.covering(f"v{int(veh[k])}", int(ts[k]), pad)
        assert (listed[got[k]] if got[k] >= 0 else None) == want


# -- replace semantics in the engine ------------------------------------------------------------


def evening(v: int = 0) -> list[dict[str, list[Any]]]:
    return [trip(v, local_ms(*WED, 20), 30)]


def test_rejected_order_excuses_nothing() -> None:
    o = DispatchOrder("o1", "v0", "local", local_ms(*WED, 19), local_ms(*WED, 23), state="rejected")
    ev = engine(orders=[o]).process(batch(*evening()))
    assert [e.action for e in of(ev, "off_hours")] == ["open"]


def test_cancelled_after_approval_excuses_nothing_from_then_on() -> None:
    eng = engine()
    o = DispatchOrder("o1", "v0", "local", local_ms(*WED, 19), local_ms(*WED, 23))
    assert eng.add_order(o) == []
    assert of(eng.process(batch(trip(0, local_ms(*WED, 20), 10))), "off_hours") == []
    cancelled = DispatchOrder(
        "o1", "v0", "local", local_ms(*WED, 19), local_ms(*WED, 23), state="cancelled"
    )
    assert eng.add_order(cancelled) == []
    ev = eng.process(batch(trip(0, local_ms(*WED, 20, 11), 10)))
    assert [e.action for e in of(ev, "off_hours")] == ["open"]


def test_withdrawing_an_order_uncovers_what_it_covered() -> None:
    eng = engine()
    ev = eng.process(batch(*evening(), trip(0, local_ms(*WED, 21), 10, speed=0, acc=False)))
    closed = of(ev, "off_hours")[-1]
    assert closed.action == "close" and not closed.covered
    approved = DispatchOrder("o1", "v0", "local", local_ms(*WED, 19), local_ms(*WED, 23))
    (cov,) = eng.add_order(approved)
    assert (cov.id, cov.covered, cov.detail["order"]) == (closed.id, True, "o1")
    rejected = DispatchOrder(
        "o1", "v0", "local", local_ms(*WED, 19), local_ms(*WED, 23), approved=False
    )
    (back,) = eng.add_order(rejected)
    assert (back.id, back.covered, "order" in back.detail) == (closed.id, False, False)
    # a second order that also covers takes over instead
    eng.add_order(approved)
    other = DispatchOrder("o2", "v0", "local", local_ms(*WED, 18), local_ms(*WED, 23, 30))
    assert eng.add_order(other) == []  # already covered (by o1)
    (moved,) = eng.add_order(rejected)
    assert (moved.covered, moved.detail["order"]) == (True, "o2")


# -- no_order -----------------------------------------------------------------------------------


def test_ten_oclock_trip_without_order_opens_one_episode_and_a_late_order_covers_it() -> None:
    eng = engine(NO_ORDER)
    t = local_ms(*WED, 10)
    ev = eng.process(batch(*day_out(0, t, 60)))
    no = of(ev, "no_order")
    assert [e.action for e in no] == ["open", "close"]
    opened = no[0]
    assert opened.detail["left_at"] == t + 5 * 60_000 + 30_000
    assert opened.detail["fence_name"] == "财政局停车场"
    assert of(ev, "off_hours") == []  # working hours: only no_order speaks
    late = DispatchOrder(
        "bu",
        "v0",
        "local",
        t,
        t + 2 * 3_600_000,
        approved_at=t + 3 * 3_600_000,
        state="completed",
    )
    (cov,) = eng.add_order(late)
    assert (cov.id, cov.covered, cov.ts) == (opened.id, True, t + 3 * 3_600_000)


def test_trip_under_an_approved_order_or_of_another_org_raises_no_no_order() -> None:
    t = local_ms(*WED, 10)
    o = DispatchOrder("o1", "v0", "local", t, t + 2 * 3_600_000)
    assert of(engine(NO_ORDER, orders=[o]).process(batch(*day_out(0, t, 60))), "no_order") == []
    # no_order is opt-in: the default configuration checks nobody
    assert of(engine().process(batch(*day_out(0, t, 60))), "no_order") == []
    rejected = DispatchOrder("o1", "v0", "local", t, t + 2 * 3_600_000, state="rejected")
    ev = engine(NO_ORDER, orders=[rejected]).process(batch(*day_out(0, t, 60)))
    assert [e.action for e in of(ev, "no_order")] == ["open", "close"]


def test_short_hop_stays_below_both_thresholds() -> None:
    # 10 minutes at 1e-4 degree per 30 s: about 0.2 km and below 20 minutes
    ev = engine(NO_ORDER).process(batch(*day_out(0, local_ms(*WED, 10), 10)))
    assert of(ev, "no_order") == []


def test_distance_alone_opens_before_the_time_threshold() -> None:
    cfg = RulesConfig.model_validate({"no_order": {"orgs": ["city"], "min_minutes": 600}})
    t = local_ms(*WED, 10)
    # 30 minutes at ~0.5 km per 30 s step
    far = trip(0, t + 5 * 60_000 + 30_000, 30, at=TOWN)
    far["lon"] = [TOWN[0] + i * 5e-3 for i in range(len(far["lon"]))]
    ev = engine(cfg).process(batch(trip(0, t, 5, at=IN_LOT, speed=0, acc=False), far))
    (opened,) = of(ev, "no_order")
    assert opened.detail["distance_km"] > 2.0
    assert opened.started_at - opened.detail["left_at"] < 10 * 60_000


def test_replay_and_reference_agree_on_no_order() -> None:
    t = local_ms(*WED, 10)
    parts = batch(*day_out(0, t, 60), *day_out(2, t + 3_600_000, 45))
    got = episodes(replay([parts], NO_ORDER, make_registry(3), fences=lambda: FENCES))
    ref = ReferenceEngine(NO_ORDER, make_registry(3), fences=lambda: FENCES)
    want = episodes(ref.process(parts))
    assert [e for e in got if e.kind != "offline"] == want
    assert sorted(e.vehicle_id for e in got if e.kind == "no_order") == ["v0", "v2"]
