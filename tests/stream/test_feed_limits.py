"""What one client can make the feed core hold: outbox, subscriptions, filters, handling."""

from __future__ import annotations

import orjson
import pytest

from fleet.errors import BadRecord
from fleet.registry import Registry
from stream.feed import FeedCore, FeedLimits, Subscription
from tests.stream.test_feed import T0, alarm, batch, frames


def test_replies_share_the_outbox_and_cut_off_a_client_that_never_reads(
    registry: Registry,
) -> None:
    core = FeedCore(registry, client_buffer=8)
    core.connect(1, "city", T0)
    core.connect(2, "city", T0)
    frames(core, 1)
    frames(core, 2)
    pong = orjson.dumps({"type": "pong", "seq": core.seq})
    sent = 0
    while core.reply(1, pong):
        sent += 1
        assert sent <= 8, "the outbox bound does not apply to replies"
    assert not core.connected(1) and core.take_closing() == [1]
    assert core.stats.slow_disconnects == 1 and core.pending(1) == 0
    # the neighbour is untouched and still served
    assert core.connected(2) and core.reply(2, pong)
    assert [f["type"] for f in frames(core, 2)] == ["pong"]


def test_a_reply_does_not_count_as_a_delivered_position_frame(registry: Registry) -> None:
    core = FeedCore(registry, interval_ms=100)
    core.connect(1, "city", T0)
    frames(core, 1)
    core.positions(batch([(0, T0, 30.0, 106.0, 10.0)]))
    core.reply(1, b'{"type":"pong"}')
    frames(core, 1)
    core.frames_due(T0 + 1000)
    [pos] = frames(core, 1)
    assert pos["type"] == "positions" and [i["vehicle"] for i in pos["items"]] == ["V1"]


def test_subscriptions_over_the_limits_are_refused(registry: Registry) -> None:
    limits = FeedLimits(max_vehicles=10, max_orgs=2)
    with pytest.raises(BadRecord) as exc:
        Subscription.from_message({"op": "subscribe", "vehicles": ["V1"] * 11}, limits)
    assert exc.value.reason == "subscription_too_large"
    with pytest.raises(BadRecord) as exc:
        Subscription.from_message({"op": "subscribe", "orgs": ["city"] * 3}, limits)
    assert exc.value.reason == "subscription_too_large"
    core = FeedCore(registry, limits=limits)
    core.connect(1, "city", T0)
    with pytest.raises(BadRecord) as exc:
        core.subscribe(1, Subscription(vehicles=("V1",) * 11), T0)
    assert exc.value.reason == "subscription_too_large"
    core.subscribe(1, Subscription.from_message({"vehicles": ["V1"] * 10}, limits), T0)


def test_filter_masks_live_only_as_long_as_their_clients(registry: Registry) -> None:
    core = FeedCore(registry)
    subs = [
        Subscription(vehicles=(f"V{1 + k % 4}",) * (1 + k)) for k in range(40)
    ]  # 40 distinct filters (the key keeps repeats, as a client sent them)
    for cid, sub in enumerate(subs, start=1):
        core.connect(cid, "city", T0)
        core.subscribe(cid, sub, T0)
    assert core.cached_filters == 40
    core.connect(100, "city", T0)
    core.connect(101, "city", T0)
    assert core.cached_filters == 41  # the two unfiltered clients share one mask
    for cid in range(1, 41):
        core.subscribe(cid, Subscription(), T0)  # back to the shared unfiltered one
    assert core.cached_filters == 1
    for cid in [*range(1, 41), 100, 101]:
        core.disconnect(cid)
    assert core.cached_filters == 0


def test_a_second_acknowledgement_appends_and_never_overwrites(registry: Registry) -> None:
    core = FeedCore(registry)
    core.connect(1, "city", T0)
    frames(core, 1)
    ev = alarm(0)
    core.alarm(ev)
    first = {"user": "op1", "at": T0 + 1, "note": "电话联系驾驶员", "action": "ack"}
    second = {"user": "op2", "at": T0 + 2, "note": "已到达现场", "action": "ack"}
    core.acknowledge(ev.id, first)
    core.acknowledge(ev.id, second)
    got = frames(core, 1)
    assert got[-1]["alarm"]["ack"] == first
    assert got[-1]["alarm"]["acks"] == [first, second]
    [held] = core.alarm_items()
    assert held["ack"] == first and [a["user"] for a in held["acks"]] == ["op1", "op2"]
    # the close keeps the record, and it is what a late update of the episode shows
    core.alarm(alarm(0, "close", at=T0 + 5000))
    assert core.alarm_items() == []
    core.alarm(alarm(0, "update", at=T0 + 6000))
    assert core.alarm_items()[0]["acks"] == [first, second]


def test_handling_records_are_bounded(registry: Registry) -> None:
    core = FeedCore(registry, closed_alarms_kept=10)
    for k in range(500):
        ev = alarm(k % 4, kind=f"speeding{k}")
        core.alarm(ev)
        core.acknowledge(ev.id, {"user": "op", "at": T0, "note": ""})
        core.alarm(alarm(k % 4, "close", kind=f"speeding{k}", at=T0 + 1))
        # an acknowledgement for an alarm this feed never held (another node's, or gone)
        core.acknowledge(f"V1:elsewhere{k}:{T0}", {"user": "op", "at": T0, "note": ""})
    assert core.alarm_items() == []
    assert core.handling_kept <= 10
    # open alarms keep theirs as long as they are open
    for k in range(50):
        ev = alarm(k % 4, kind=f"open{k}")
        core.alarm(ev)
        core.acknowledge(ev.id, {"user": "op", "at": T0, "note": ""})
    assert core.handling_kept <= 10 + 50
    assert all(a["ack"] is not None for a in core.alarm_items())
