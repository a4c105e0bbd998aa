"""Resuming a page by its last global alarm id: same node by seq, another node by gid."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fleet.errors import BadRecord
from fleet.events import AlarmEvent
from fleet.registry import Registry
from stream.feed import FeedCore, gid_key

T0 = 1_764_034_200_000


def ev(v: int, vid: str, n: int, action: str = "open") -> AlarmEvent:
    return AlarmEvent(
        id=f"{vid}:speeding:{T0 + n}",
        vehicle=v,
        vehicle_id=vid,
        kind="speeding",
        action=action,  # type: ignore[arg-type]
        started_at=T0 + n,
        ts=T0 + n,
        lat=30.4,
        lon=106.6,
        ended_at=T0 + n if action == "close" else None,
    )


def drained(feed: FeedCore, client: int) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in feed.drain(client)]


def two_nodes(registry: Registry, ring: int = 64) -> tuple[FeedCore, FeedCore]:
    a = FeedCore(registry, node="A", alarm_ring=ring)
    b = FeedCore(registry, node="B", alarm_ring=ring)
    for f in (a, b):
        f.start_history("0-0")
    return a, b


def feed_both(a: FeedCore | None, b: FeedCore, event: AlarmEvent, gid: str) -> None:
    for f in (a, b):
        if f is not None:
            f.alarm(event, gid)


def test_gid_key_orders_stream_ids_and_refuses_garbage() -> None:
    assert gid_key("1764034200000-2") < gid_key("1764034200000-10") < gid_key("1764034200001-0")
    assert gid_key("5") == (5, 0)
    for bad in ("", "-1", "abc", "1-x", "1-2-3", "9" * 50):
        with pytest.raises(BadRecord):
            gid_key(bad)


def test_a_page_that_moves_gets_exactly_the_alarms_it_missed(registry: Registry) -> None:
    a, b = two_nodes(registry)
    a.connect(1, "city", T0)
    feed_both(a, b, ev(0, "V1", 1), f"{T0}-0")
    feed_both(a, b, ev(1, "V2", 2), f"{T0}-1")
    seen = drained(a, 1)
    assert seen[0]["type"] == "snapshot" and seen[0]["node"] == "A" and seen[0]["gap"] is False
    last = [f for f in seen if f["type"] == "alarm"][-1]
    assert last["gid"] == f"{T0}-1"
    # node A dies; B goes on taking alarms (B's seq is its own: it means nothing to A's page)
    b.alarm(ev(2, "V3", 3), f"{T0 + 5}-0")
    b.alarm(ev(0, "V1", 1, "close"), f"{T0 + 6}-0")
    for _n in range(5):  # positions move B's seq far from A's
        b.resync(T0)
    mode = b.connect(9, "city", T0, last["seq"], last_gid=last["gid"], from_node="A")
    got = drained(b, 9)
    assert mode == "gid" and got[0]["type"] == "snapshot"
    assert got[0]["resume"] == "gid" and got[0]["gap"] is False and got[0]["gid"] == f"{T0 + 6}-0"
    replay = [(f["gid"], f["alarm"]["id"], f["alarm"]["state"]) for f in got[1:]]
    assert replay == [
        (f"{T0 + 5}-0", f"V3:speeding:{T0 + 3}", "open"),
        (f"{T0 + 6}-0", f"V1:speeding:{T0 + 1}", "closed"),
    ]
    assert b.stats.resumes == 1 and b.stats.resume_gaps == 0


def test_back_on_the_same_node_resumes_by_seq(registry: Registry) -> None:
    a, _ = two_nodes(registry)
    a.connect(1, "city", T0)
    a.alarm(ev(0, "V1", 1), f"{T0}-0")
    seq = drained(a, 1)[-1]["seq"]
    a.disconnect(1)
    a.alarm(ev(1, "V2", 2))  # shown locally while Redis was down: no gid, still replayed
    assert a.connect(2, "city", T0, seq, last_gid=f"{T0}-0", from_node="A") == "seq"
    got = drained(a, 2)
    assert [f["type"] for f in got] == ["snapshot", "alarm"] and "gid" not in got[1]


def test_a_gid_older_than_the_ring_is_a_gap(registry: Registry) -> None:
    _a, b = two_nodes(registry, ring=3)
    for n in range(6):
        feed_both(None, b, ev(n % 4, f"V{n % 4 + 1}", n), f"{T0 + n}-0")
    assert b.gid_floor == f"{T0 + 2}-0"  # entries 0..2 left the ring
    assert b.connect(1, "city", T0, 5, last_gid=f"{T0 + 1}-0", from_node="A") == "gap"
    got = drained(b, 1)
    assert got[0]["gap"] is True and got[0]["resume"] == "gap"
    # what the ring still has follows; the snapshot holds every open alarm anyway
    assert [f["gid"] for f in got[1:]] == [f"{T0 + n}-0" for n in (3, 4, 5)]
    held = {f"V{n % 4 + 1}:speeding:{T0 + n}" for n in range(6)}
    assert {x["id"] for x in got[0]["alarms"]} == held
    # a gid exactly at the floor is complete
    assert b.connect(2, "city", T0, None, last_gid=f"{T0 + 2}-0", from_node="A") == "gid"
    assert b.stats.resume_gaps == 1


def test_no_gid_from_another_node_is_a_gap_and_a_new_page_is_not(registry: Registry) -> None:
    _a, b = two_nodes(registry)
    assert b.connect(1, "city", T0, 17, from_node="A") == "gap"
    assert drained(b, 1)[0]["gap"] is True
    assert b.connect(2, "city", T0) == "none"
    assert drained(b, 2)[0]["gap"] is False
    # a node that never read the Stream cannot promise anything by gid
    lone = FeedCore(registry, node="L")
    assert lone.connect(1, "city", T0, None, last_gid=f"{T0}-0", from_node="A") == "gap"


def test_remember_puts_a_locally_shown_alarm_in_the_ring_without_showing_it_again(
    registry: Registry,
) -> None:
    a, _b = two_nodes(registry)
    a.connect(1, "city", T0)
    drained(a, 1)
    e = ev(0, "V1", 1)
    a.alarm(e)  # Redis down: shown here at once
    assert [f["type"] for f in drained(a, 1)] == ["alarm"]
    a.remember(e, f"{T0 + 1}-0")  # its Stream entry came back later
    assert drained(a, 1) == [] and a.last_gid == f"{T0 + 1}-0"
    a.connect(2, "city", T0, None, last_gid=f"{T0}-0", from_node="B")
    got = drained(a, 2)
    assert [f.get("gid") for f in got[1:]] == [f"{T0 + 1}-0"]


def test_a_malformed_gid_is_refused(registry: Registry) -> None:
    _, b = two_nodes(registry)
    with pytest.raises(BadRecord):
        b.connect(1, "city", T0, None, last_gid="drop table", from_node="A")
    assert not b.connected(1)


def test_a_replay_longer_than_the_client_buffer_is_delivered_not_cut_off(
    registry: Registry,
) -> None:
    # 300 alarms missed, buffer 16: before the fix the resume itself overflowed the outbox,
    # the page was cut off as slow, reconnected, and was cut off again (194 reconnects in
    # the failover bench).
    b = FeedCore(registry, node="B", alarm_ring=1024, client_buffer=16)
    b.start_history("0-0")
    for n in range(300):
        b.alarm(ev(n % 4, f"V{n % 4 + 1}", n), f"{T0 + n}-0")
    assert b.connect(1, "city", T0, 3, last_gid=f"{T0}-0", from_node="A") == "gid"
    assert b.take_closing() == [] and b.stats.slow_disconnects == 0
    got = drained(b, 1)
    assert [f["gid"] for f in got[1:]] == [f"{T0 + n}-0" for n in range(1, 300)]
    # the allowance is for the replay only: a client that then stops reading is cut off
    for n in range(300, 320):
        b.alarm(ev(n % 4, f"V{n % 4 + 1}", n), f"{T0 + n}-0")
    assert b.take_closing() == [1] and b.stats.slow_disconnects == 1
