"""Vehicle state defined once (issue #13): the vectorized functions against their scalar
twins, and the feed, the live state and the rules agreeing on random fleets."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fleet.batch import PositionBatch
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from fleet.vehicle_state import (
    STATES,
    VehicleStateConfig,
    moving,
    moving_scalar,
    offline,
    offline_scalar,
    state_names,
    state_scalar,
    states,
)
from rules.config import RulesConfig
from rules.engine import RulesEngine
from rules.reference import ReferenceEngine
from store.live import MemoryLiveState
from stream.feed import FeedCore

NOW = 1_764_388_800_000  # Saturday 2025-11-29 12:00 +08:00: a rest day, off_hours all day
NEVER = np.iinfo(np.int64).min

speeds = st.one_of(
    st.floats(min_value=0, max_value=200, width=32),
    st.sampled_from([0.0, 4.9, 5.0, 5.1, 12.0, math.nan]),
)


def test_the_documented_boundaries() -> None:
    cfg = VehicleStateConfig()
    assert (cfg.moving_speed_kmh, cfg.offline_after_ms) == (5.0, 600_000)
    assert moving_scalar(5.0, True, 5.0) and not moving_scalar(4.99, True, 5.0)
    assert not moving_scalar(50.0, False, 5.0)  # ACC off: parked, whatever the GPS says
    assert moving_scalar(50.0, None, 5.0)  # no ACC at all: speed decides
    assert not moving_scalar(math.nan, True, 5.0)
    assert offline_scalar(NOW - 600_000, NOW, 600_000)  # silent exactly offline_after: offline
    assert not offline_scalar(NOW - 599_999, NOW, 600_000)
    assert offline_scalar(None, NOW, 600_000)
    assert state_scalar(NOW, 40.0, True, 1, NOW, cfg) == "alarm"
    assert state_scalar(NOW - 10**9, 40.0, True, 0, NOW, cfg) == "offline"
    assert states(np.empty(0, np.int64), np.empty(0), None, np.empty(0), NOW, cfg).shape == (0,)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            speeds,
            st.one_of(st.none(), st.booleans()),
            st.integers(min_value=-2_000_000, max_value=0),
            st.integers(min_value=0, max_value=2),
            st.booleans(),
        ),
        max_size=40,
    ),
    kmh=st.sampled_from([0.0, 5.0, 7.5, 30.0]),
    after_s=st.sampled_from([1.0, 60.0, 600.0]),
)
def test_vectorized_agrees_with_scalar(
    rows: list[tuple[float, bool | None, int, int, bool]], kmh: float, after_s: float
) -> None:
    cfg = VehicleStateConfig(moving_speed_kmh=kmh, offline_after_s=after_s)
    speed = np.array([r[0] for r in rows], dtype=np.float32)
    ts = np.array([NOW + r[2] if r[4] else NEVER for r in rows], dtype=np.int64)
    has = np.array([r[4] for r in rows], dtype=bool)
    alarms = np.array([r[3] for r in rows], dtype=np.int32)
    for acc_col in (None, np.array([bool(r[1]) for r in rows], dtype=bool)):
        got_m = moving(speed, acc_col, kmh).tolist()
        want_m = [
            moving_scalar(float(s), None if acc_col is None else bool(acc_col[i]), kmh)
            for i, s in enumerate(speed.tolist())
        ]
        assert got_m == want_m
        got = state_names(states(ts, speed, acc_col, alarms, NOW, cfg, has))
        want = [
            state_scalar(
                int(t) if h else None,
                float(s),
                None if acc_col is None else bool(acc_col[i]),
                int(al),
                NOW,
                cfg,
            )
            for i, (t, s, al, h) in enumerate(zip(ts, speed.tolist(), alarms, has, strict=True))
        ]
        assert got == want
    assert offline(ts, NOW, cfg.offline_after_ms, has).tolist() == [
        offline_scalar(int(t) if h else None, NOW, cfg.offline_after_ms)
        for t, h in zip(ts, has, strict=True)
    ]


def _registry(n: int) -> Registry:
    orgs = [OrgConfig(id="city", name="广安市")]
    vehicles = [
        VehicleConfig(id=f"V{i}", plate=f"川X{i:05d}", terminal=f"{10000 + i}", org="city")
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(orgs))


# Only off_hours (opens at the first moving point on a rest day) and offline.
RULES = RulesConfig.model_validate(
    {
        "speeding": {"enabled": False},
        "off_hours": {"min_duration_s": 0},
        "out_of_area": {"enabled": False},
        "forbidden_zone": {"enabled": False},
        "parking_violation": {"enabled": False},
        "terminal_alarm": {"enabled": False},
        "fatigue": {"enabled": False},
        "sealed_moving": {"enabled": False},
    }
)


@settings(max_examples=40, deadline=None)
@given(
    points=st.lists(
        st.tuples(speeds, st.booleans(), st.integers(min_value=0, max_value=1_500_000)),
        min_size=1,
        max_size=25,
    ),
    kmh=st.sampled_from([5.0, 8.0, 30.0]),
    after_s=st.sampled_from([60.0, 600.0]),
)
@example(  # the boundaries: exactly the threshold, ACC off, exactly offline_after
    points=[(5.0, True, 0), (5.0, False, 0), (4.9, True, 0), (9.0, True, 60_000), (0, True, 0)],
    kmh=5.0,
    after_s=60.0,
)
def test_feed_live_state_and_rules_agree(
    points: list[tuple[float, bool, int]], kmh: float, after_s: float
) -> None:
    """One point per vehicle, ``age`` ms before NOW; the feed's state, the live state's and
    the rules' (off_hours opening = moving, the offline timer = offline) agree."""
    cfg = VehicleStateConfig(moving_speed_kmh=kmh, offline_after_s=after_s)
    n = len(points)
    reg = _registry(n)
    batch = PositionBatch.from_columns(
        vehicle=np.arange(n),
        ts=[NOW - age for _, _, age in points],
        lat=[30.5] * n,
        lon=[106.6] * n,
        speed=[s for s, _, _ in points],
        acc=[a for _, a, _ in points],
    )
    feed = FeedCore(reg, vehicle_state=cfg)
    feed.positions(batch)
    feed_states = [STATES[c] for c in feed.state_codes(NOW).tolist()]

    live = MemoryLiveState(vehicle_state=cfg)
    asyncio.run(live.open(reg))
    live.apply(batch)
    live_states = [item["state"] for item in live.latest.items(np.arange(n), NOW)]
    assert live_states == feed_states

    for engine in (
        RulesEngine(RULES, reg, vehicle_state=cfg),
        ReferenceEngine(RULES, reg, vehicle_state=cfg),
    ):
        opened = {e.vehicle for e in engine.process(batch) if e.kind == "off_hours"}
        assert opened == {v for v, s in enumerate(feed_states) if s == "moving"} | {
            # a moving point that is already offline at NOW still opened off_hours when seen
            v
            for v, (s, a, _) in enumerate(points)
            if feed_states[v] == "offline" and moving_scalar(float(np.float32(s)), a, kmh)
        }
        silent = {e.vehicle for e in engine.tick(NOW) if e.kind == "offline"}
        assert silent == {v for v, s in enumerate(feed_states) if s == "offline"}


def test_moving_is_the_same_in_the_three_places_at_the_boundary() -> None:
    """At exactly moving_speed_kmh with ACC on all three say moving (the rules once said
    parked: they compared with >)."""
    cfg = VehicleStateConfig(moving_speed_kmh=20)
    reg = _registry(1)
    batch = PositionBatch.from_columns(
        vehicle=[0], ts=[NOW], lat=[30.5], lon=[106.6], speed=[20.0], acc=[True]
    )
    feed = FeedCore(reg, vehicle_state=cfg)
    feed.positions(batch)
    assert STATES[feed.state_codes(NOW)[0]] == "moving"
    events = RulesEngine(RULES, reg, vehicle_state=cfg).process(batch)
    assert [e.kind for e in events] == ["off_hours"]


@pytest.mark.parametrize(
    ("doc", "new"),
    [
        ({"live": {"offline_after_s": 60}}, "vehicle_state.offline_after_s"),
        ({"live": {"moving_kmh": 3}}, "vehicle_state.moving_speed_kmh"),
        ({"rules": {"offline": {"after_s": 60}}}, "vehicle_state.offline_after_s"),
        ({"rules": {"off_hours": {"moving_speed_kmh": 5}}}, "vehicle_state.moving_speed_kmh"),
        ({"rules": {"fatigue": {"moving_speed_kmh": 5}}}, "vehicle_state.moving_speed_kmh"),
        ({"rules": {"sealed_moving": {"moving_speed_kmh": 5}}}, "vehicle_state.moving_speed_kmh"),
    ],
)
def test_old_keys_are_an_error_naming_the_new_key(doc: dict[str, object], new: str) -> None:
    from fleet.errors import ConfigError
    from fleetwatch.config import parse_config

    with pytest.raises(ConfigError) as err:
        parse_config(doc, source="fleet.toml")
    msg = str(err.value)
    assert msg.startswith("fleet.toml: ") and new in msg
    table, key = new.split(".")
    assert f"set {key} under [{table}]" in msg


def test_the_service_builds_feed_live_state_and_rules_with_vehicle_state() -> None:
    from fleetwatch.config import parse_config
    from fleetwatch.service import build_service

    cfg = parse_config({"vehicle_state": {"moving_speed_kmh": 12, "offline_after_s": 90}})
    svc = build_service(cfg)
    want = VehicleStateConfig(moving_speed_kmh=12, offline_after_s=90)
    assert svc.feed.vehicle_state == want
    assert svc.live.vehicle_state == want
    assert svc.engine.vehicle_state == want


@pytest.mark.parametrize(("kmh", "trips"), [(5.0, 1), (30.0, 0)])
def test_the_board_counts_trips_with_the_configured_moving_speed(kmh: float, trips: int) -> None:
    """The board (daily figures from the history store) moves with [vehicle_state] too:
    20 km/h with ACC on is a trip at 5 km/h, and nothing at 30 km/h."""
    import datetime as dt

    from store.config import StoreConfig
    from store.factory import create_history

    reg = _registry(1)
    day_start = 1_763_913_600_000  # 2025-11-24 00:00 +08:00
    n = 20
    batch = PositionBatch.from_columns(
        vehicle=[0] * n,
        ts=[day_start + 3_600_000 + i * 30_000 for i in range(n)],
        lat=[30.5 + i * 0.001 for i in range(n)],
        lon=[106.6] * n,
        speed=[20.0] * n,
        acc=[True] * n,
    )

    async def run() -> dict[str, object]:
        history = create_history(
            StoreConfig(kind="memory"), VehicleStateConfig(moving_speed_kmh=kmh)
        )
        await history.open(reg)
        try:
            await history.write_positions(batch)
            return await history.daily_stats(dt.date(2025, 11, 24), "Asia/Shanghai")
        finally:
            await history.close()

    board = asyncio.run(run())
    assert board["total"]["trips"] == trips  # type: ignore[index]
