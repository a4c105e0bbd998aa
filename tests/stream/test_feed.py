from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.batch import PositionBatch
from fleet.errors import BadRecord, Misuse
from fleet.events import AlarmEvent
from fleet.registry import Registry
from fleet.vehicle_state import VehicleStateConfig
from fleetwatch.config import parse_config
from stream.feed import (
    STATES,
    FeedCore,
    Subscription,
    latest_per_vehicle,
    latest_per_vehicle_reference,
)
from tests.stream.conftest import small_config

T0 = 1_764_034_200_000
REGISTRY = Registry.from_config(parse_config(small_config()))


def batch(rows: list[tuple[int, int, float, float, float]]) -> PositionBatch:
    """Rows of (vehicle, ts, lat, lon, speed); ACC is on whenever the speed is not 0."""
    v, ts, lat, lon, speed = zip(*rows, strict=True) if rows else ((), (), (), (), ())
    acc = [sp > 0 for sp in speed]
    return PositionBatch.from_columns(vehicle=v, ts=ts, lat=lat, lon=lon, speed=speed, acc=acc)


def frames(core: FeedCore, client: int) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in core.drain(client)]


def alarm(vehicle: int, action: str = "open", kind: str = "speeding", at: int = T0) -> AlarmEvent:
    vid = f"V{vehicle + 1}"
    return AlarmEvent(
        id=f"{vid}:{kind}:{T0}",
        vehicle=vehicle,
        vehicle_id=vid,
        kind=kind,
        action=action,  # type: ignore[arg-type]
        started_at=T0,
        ts=at,
        lat=30.5,
        lon=106.6,
        ended_at=at if action == "close" else None,
    )


def test_snapshot_then_conflated_positions(registry: Registry) -> None:
    core = FeedCore(registry, interval_ms=500)
    core.positions(batch([(0, T0, 30.5, 106.6, 40.0), (1, T0, 30.4, 106.5, 0.0)]))
    core.connect(1, "city", T0)
    [snap] = frames(core, 1)
    assert snap["type"] == "snapshot"
    assert {v["vehicle"] for v in snap["vehicles"]} == {"V1", "V2"}
    v1 = next(v for v in snap["vehicles"] if v["vehicle"] == "V1")
    assert set(v1) == {
        "vehicle",
        "plate",
        "org",
        "ts",
        "lat",
        "lon",
        "speed",
        "heading",
        "acc",
        "state",
    }
    assert v1["state"] == "moving" and v1["plate"] == "川X10001" and v1["org"] == "city"
    # three updates of V1 and one of V3 before the frame: one item each, the latest
    core.positions(batch([(0, T0 + 1000, 30.51, 106.6, 50.0), (2, T0 + 1000, 30.3, 106.3, 0.0)]))
    core.positions(batch([(0, T0 + 2000, 30.52, 106.6, 60.0)]))
    core.positions(batch([(0, T0 + 1500, 30.99, 106.6, 70.0)]))  # older: ignored
    out = core.frames_due(T0 + 2000)
    assert [cid for cid, _ in out] == [1]
    [pos] = frames(core, 1)
    assert pos["type"] == "positions" and pos["seq"] > snap["seq"]
    items = {i["vehicle"]: i for i in pos["items"]}
    assert set(items) == {"V1", "V3"}
    assert items["V1"]["lat"] == 30.52 and items["V1"]["speed"] == 60.0
    assert items["V3"]["state"] == "parked"
    # nothing new: no frame; rate limit: at most one per interval
    assert core.frames_due(T0 + 3000) == []
    core.positions(batch([(0, T0 + 3000, 30.53, 106.6, 60.0)]))
    assert core.frames_due(T0 + 2100) == []
    assert len(core.frames_due(T0 + 2500)) == 1


def test_latest_row_per_vehicle_within_a_batch(registry: Registry) -> None:
    core = FeedCore(registry)
    core.positions(
        batch([(0, T0 + 5, 1.0, 1.0, 0), (0, T0 + 9, 2.0, 2.0, 0), (0, T0 + 7, 3.0, 3.0, 0)])
    )
    assert core.lat[0] == 2.0 and core.ts[0] == T0 + 9


def test_feed_shows_only_the_token_subtree(registry: Registry) -> None:
    core = FeedCore(registry)
    core.positions(batch([(i, T0, 30.0, 106.0, 0.0) for i in range(4)]))
    core.connect(1, "wusheng", T0)
    core.connect(2, "yuechi", T0)
    assert {v["vehicle"] for v in frames(core, 1)[0]["vehicles"]} == {"V2", "V3"}
    assert {v["vehicle"] for v in frames(core, 2)[0]["vehicles"]} == {"V4"}
    core.positions(batch([(i, T0 + 1000, 30.1, 106.1, 0.0) for i in range(4)]))
    core.alarm(alarm(3))  # a Yuechi vehicle
    core.frames_due(T0 + 1000)
    got1 = frames(core, 1)
    assert [f["type"] for f in got1] == ["positions"]
    assert {i["vehicle"] for i in got1[0]["items"]} == {"V2", "V3"}
    got2 = frames(core, 2)
    assert [f["type"] for f in got2] == ["alarm", "positions"]
    # subscribing to another county's org does not widen what the token may see
    core.subscribe(1, Subscription(orgs=("yuechi",)), T0 + 1000)
    [snap] = frames(core, 1)
    assert snap["vehicles"] == [] and snap["alarms"] == []


def test_subscription_filters(registry: Registry) -> None:
    core = FeedCore(registry)
    core.positions(
        batch(
            [
                (0, T0, 30.0, 106.0, 0.0),
                (1, T0, 31.0, 107.0, 0.0),
                (2, T0, 30.2, 106.2, 0.0),
                (3, T0, 30.1, 106.1, 0.0),
            ]
        )
    )
    core.connect(1, "city", T0)
    frames(core, 1)
    core.subscribe(1, Subscription(orgs=("wusheng",)), T0)
    assert {v["vehicle"] for v in frames(core, 1)[0]["vehicles"]} == {"V2", "V3"}
    core.subscribe(1, Subscription(vehicles=("V1", "V4")), T0)
    assert {v["vehicle"] for v in frames(core, 1)[0]["vehicles"]} == {"V1", "V4"}
    core.subscribe(1, Subscription(bbox=(105.9, 29.9, 106.15, 30.15)), T0)
    assert {v["vehicle"] for v in frames(core, 1)[0]["vehicles"]} == {"V1", "V4"}
    # V3 drives into the box, V1 out of it
    core.positions(batch([(2, T0 + 1000, 30.05, 106.05, 30.0), (0, T0 + 1000, 35.0, 110.0, 30.0)]))
    core.frames_due(T0 + 1000)
    assert {i["vehicle"] for i in frames(core, 1)[0]["items"]} == {"V3"}
    with pytest.raises(BadRecord):
        core.subscribe(1, Subscription(orgs=("nowhere",)), T0)
    with pytest.raises(BadRecord):
        Subscription.from_message({"op": "subscribe", "bbox": [1, 2, 0, 3]})
    with pytest.raises(BadRecord):
        Subscription.from_message({"op": "subscribe", "orgs": "city"})
    assert Subscription.from_message({"op": "subscribe", "bbox": [1, 2, 3, 4]}).bbox == (1, 2, 3, 4)


def test_alarms_never_conflated_and_replayed_after_reconnect(registry: Registry) -> None:
    core = FeedCore(registry)
    core.positions(batch([(0, T0, 30.0, 106.0, 90.0)]))
    core.connect(1, "city", T0)
    seen = frames(core, 1)
    last_seq = seen[-1]["seq"]
    core.disconnect(1)
    core.alarm(alarm(0, "open"))
    core.alarm(alarm(0, "update"))
    core.alarm(alarm(0, "close", at=T0 + 60_000))
    core.alarm(alarm(3, "open", kind="offline"))
    core.connect(2, "wusheng", T0 + 1000, last_seq=last_seq)  # not V1's org: only its own
    got = frames(core, 2)
    assert [f["type"] for f in got] == ["snapshot"]
    core.connect(3, "city", T0 + 1000, last_seq=last_seq)
    got = frames(core, 3)
    assert [f["type"] for f in got] == ["snapshot", "alarm", "alarm", "alarm", "alarm"]
    assert [f["alarm"]["state"] for f in got[1:]] == ["open", "open", "closed", "open"]
    seqs = [f["seq"] for f in got[1:]]
    assert seqs == sorted(seqs) and all(s > last_seq for s in seqs)
    alarm_keys = {
        "id",
        "vehicle",
        "plate",
        "org",
        "kind",
        "state",
        "started_at",
        "ended_at",
        "lat",
        "lon",
        "detail",
        "severity",
        "ack",
        "acks",
    }
    assert set(got[1]["alarm"]) == alarm_keys
    # the snapshot lists the open alarm and the closed, unacknowledged one
    assert {a["kind"] for a in got[0]["alarms"]} == {"speeding", "offline"}


def test_alarm_state_and_acknowledgement(registry: Registry) -> None:
    core = FeedCore(registry)
    core.positions(batch([(0, T0, 30.0, 106.0, 90.0)]))
    core.connect(1, "city", T0)
    frames(core, 1)
    core.alarm(alarm(0))
    core.frames_due(T0 + 1000)
    got = frames(core, 1)
    assert got[0]["type"] == "alarm" and got[1]["items"][0]["state"] == "alarm"
    woke = core.acknowledge(
        alarm(0).id, {"user": "op", "at": T0, "note": "<b>x</b>", "handled": False}
    )
    assert woke == [1]
    [ack] = frames(core, 1)
    assert ack["alarm"]["ack"]["note"] == "<b>x</b>"
    core.alarm(alarm(0, "close", at=T0 + 5000))
    assert core.alarm_items() == []  # closed and acknowledged: off the desk
    core.frames_due(T0 + 2000)
    assert frames(core, 1)[-1]["items"][0]["state"] == "moving"
    # back-filled alarms are never live
    assert (
        core.alarm(
            AlarmEvent(
                id="x",
                vehicle=0,
                vehicle_id="V1",
                kind="speeding",
                action="open",
                started_at=T0,
                ts=T0,
                lat=0,
                lon=0,
                backfill=True,
            )
        )
        == []
    )


def test_moving_needs_acc_and_the_configured_speed(registry: Registry) -> None:
    """The feed's "moving" is fleet.vehicle_state's: ACC off at 40 km/h is parked (the map
    once said moving where the rules said parked), and the threshold is [vehicle_state]'s."""
    core = FeedCore(registry, vehicle_state=VehicleStateConfig(moving_speed_kmh=30))
    core.positions(
        PositionBatch.from_columns(
            vehicle=[0, 1, 2],
            ts=[T0] * 3,
            lat=[30.5] * 3,
            lon=[106.6] * 3,
            speed=[40.0, 40.0, 20.0],
            acc=[False, True, True],
        )
    )
    assert [STATES[c] for c in core.state_codes(T0)[:3]] == ["parked", "moving", "parked"]


def test_offline_is_a_state_change(registry: Registry) -> None:
    core = FeedCore(registry, vehicle_state=VehicleStateConfig(offline_after_s=60))
    core.positions(batch([(0, T0, 30.0, 106.0, 0.0)]))
    core.connect(1, "city", T0)
    frames(core, 1)
    core.frames_due(T0 + 61_000)
    [f] = frames(core, 1)
    assert f["items"][0]["state"] == "offline"


def test_slow_client_superseded_then_disconnected(registry: Registry) -> None:
    core = FeedCore(registry, interval_ms=100, client_buffer=4)
    core.connect(1, "city", T0)
    core.connect(2, "city", T0)
    frames(core, 1)
    frames(core, 2)
    for k in range(1, 4):  # client 1 never drains: its position frames replace each other
        core.positions(batch([(k, T0 + k * 100, 30.0 + k, 106.0, 10.0)]))
        core.frames_due(T0 + k * 100)
        assert len(frames(core, 2)) == 1
    assert core.stats.superseded == 2
    assert core.pending(1) == 1
    [f] = frames(core, 1)
    # the one frame left still carries every vehicle changed since the last delivered frame
    assert {i["vehicle"] for i in f["items"]} == {"V2", "V3", "V4"}
    for _ in range(5):
        core.alarm(alarm(0, "update"))
        frames(core, 2)
    # alarms are never dropped: the slow client is cut off rather than losing one
    assert core.take_closing() == [1]
    assert core.clients == [2]
    assert core.stats.slow_disconnects == 1


def test_misuse(registry: Registry) -> None:
    core = FeedCore(registry)
    with pytest.raises(Misuse):
        core.positions(batch([(9, T0, 0.0, 0.0, 0.0)]))
    with pytest.raises(Misuse):
        core.connect(1, "nowhere", T0)
    core.connect(1, "city", T0)
    with pytest.raises(Misuse):
        core.connect(1, "city", T0)
    assert core.positions(PositionBatch.empty()) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(-3, 3)), max_size=40),
    st.lists(st.integers(-4, 4), min_size=6, max_size=6),
)
def test_latest_per_vehicle_matches_reference(rows: list[tuple[int, int]], cur: list[int]) -> None:
    vehicle = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    current = np.array(cur, dtype=np.int64)
    fast = latest_per_vehicle(vehicle, ts, current)
    slow = latest_per_vehicle_reference(vehicle, ts, current)
    assert fast.tolist() == slow.tolist()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(0, 10),
            st.floats(allow_nan=True, allow_infinity=False, width=64),
        ),
        max_size=20,
    )
)
def test_positions_with_nan_still_encode(rows: list[tuple[int, int, float]]) -> None:
    core = FeedCore(REGISTRY)
    core.connect(1, "city", T0)
    core.positions(batch([(v, T0 + t, lat, 106.0, 1.0) for v, t, lat in rows]))
    core.frames_due(T0 + 1000)
    for f in core.drain(1):
        orjson.loads(f)
