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


# -- regions ------------------------------------------------------------------------------------

CHONGQING = (106.55, 29.57)
NANCHONG = (106.08, 30.80)
GUANG_AN = (106.63, 30.47)  # the city's seat, 广安区


def test_regions_known_and_unknown() -> None:
    from rules.regions import inside_one, known_region

    for r in (
        None,
        "city",
        "county:岳池县",
        "county:岳池",
        "out_of_city:重庆",
        "out_of_city:Nanchong",
    ):
        assert known_region(r), r
    assert not known_region("county:朝阳区") and not known_region("out_of_city:拉萨")
    assert inside_one("out_of_city:拉萨", *CHONGQING, 2.0, 15.0)  # unknown: not checked
    assert inside_one("city", *GUANG_AN, 0.0, 0.0)
    assert not inside_one("city", *CHONGQING, 2.0, 15.0)
    assert inside_one("out_of_city:重庆", *CHONGQING, 2.0, 15.0)
    assert inside_one("out_of_city:南充", *NANCHONG, 2.0, 15.0)
    assert not inside_one("out_of_city:南充", *CHONGQING, 2.0, 15.0)
    assert not inside_one("county:武胜县", *GUANG_AN, 0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(
        ["city", "county:广安区", "county:邻水县", "out_of_city:重庆", "out_of_city:成都"]
    ),
    st.lists(st.tuples(st.floats(103.5, 108.5), st.floats(29.0, 32.5)), min_size=1, max_size=30),
    st.sampled_from([0.0, 2.0]),
)
def test_inside_agrees_with_inside_one(
    region: str, pts: list[tuple[float, float]], tol: float
) -> None:
    from rules.regions import inside, inside_one

    lon = np.array([p[0] for p in pts])
    lat = np.array([p[1] for p in pts])
    got = inside(region, lon, lat, tol, 15.0)
    assert got.tolist() == [inside_one(region, a, b, tol, 15.0) for a, b in pts]


# -- order_mismatch and driver_mismatch ---------------------------------------------------------


def out_and_back(v: int, start: int, to: tuple[float, float], minutes: float) -> list[Any]:
    return [
        trip(v, start, 5, at=IN_LOT, speed=0, acc=False, move=False),
        trip(v, start + 5 * 60_000 + 30_000, minutes, at=to, speed=60),
        trip(v, start + int((6 + minutes) * 60_000), 20, at=IN_LOT, speed=0, acc=False, move=False),
    ]


def test_trip_to_the_wrong_city_is_order_mismatch() -> None:
    t = local_ms(*WED, 9)
    o = DispatchOrder("o1", "v0", "out_of_area", t, t + 8 * 3_600_000, region="out_of_city:南充")
    ev = engine(orders=[o]).process(batch(*out_and_back(0, t, CHONGQING, 60)))
    (opened, closed) = of(ev, "order_mismatch")
    assert opened.detail == {"reason": "region", "order": "o1", "region": "out_of_city:南充"}
    assert closed.action == "close"
    assert of(ev, "out_of_area") == []  # the order excuses leaving the city, not the city
    right = engine(orders=[o]).process(batch(*out_and_back(0, t, NANCHONG, 60)))
    assert of(right, "order_mismatch") == []


def test_trip_outliving_its_window_is_order_mismatch() -> None:
    t = local_ms(*WED, 9)
    o = DispatchOrder("o1", "v0", "local", t, t + 30 * 60_000)  # a 30-minute order
    ev = engine(orders=[o]).process(batch(*out_and_back(0, t, TOWN, 120)))
    (opened, _) = of(ev, "order_mismatch")
    assert opened.detail["reason"] == "window_late"
    # 30 minutes' tolerance after the end, then the 60 s debounce
    assert opened.started_at > t + 60 * 60_000
    within = engine(orders=[o]).process(batch(*out_and_back(0, t, TOWN, 40)))
    assert of(within, "order_mismatch") == []


def test_the_car_that_drives_is_not_the_one_on_the_order() -> None:
    t = local_ms(*WED, 9)
    o = DispatchOrder("o1", "v0", "local", t, t + 4 * 3_600_000)  # v0 is booked…
    ev = engine(orders=[o]).process(batch(*out_and_back(2, t, TOWN, 60)))  # …v2 drives
    (opened, _) = of(ev, "order_mismatch")
    assert opened.vehicle_id == "v2"
    assert opened.detail == {"reason": "vehicle", "order": "o1", "order_vehicle": "v0"}


def test_driver_card_of_someone_else_is_driver_mismatch() -> None:
    t = local_ms(*WED, 9)
    o = DispatchOrder("o1", "v0", "local", t, t + 4 * 3_600_000, driver_id="d-zhang")
    eng = engine(orders=[o])
    eng.driver_card("v0", "d-zhang", t)
    assert of(eng.process(batch(trip(0, t + 60_000, 10))), "driver_mismatch") == []
    eng.driver_card("v0", "d-li", t + 11 * 60_000)
    ev = eng.process(batch(trip(0, t + 12 * 60_000, 10)))
    (opened,) = of(ev, "driver_mismatch")
    assert opened.detail == {"driver": "d-li", "order_driver": "d-zhang", "order": "o1"}
    eng.driver_card("v0", None, t + 23 * 60_000)  # card out: nothing known against it
    ev = eng.process(batch(trip(0, t + 24 * 60_000, 10)))
    assert [e.action for e in of(ev, "driver_mismatch")] == ["close"]
    # the card survives a restart
    eng.driver_card("v0", "d-li", t + 35 * 60_000)
    two = engine(orders=[o])
    two.restore(eng.state_bytes())
    assert two._card[0] == "d-li"
