"""The ownership and step-down machine, pure, on a fake clock (no etcd, no event loop)."""

from __future__ import annotations

import pytest

from fleetwatch.cluster.ownership import (
    TRANSITIONS,
    Claim,
    Misuse,
    Owner,
    Ownership,
    PartitionState,
    Release,
    Start,
    Stop,
    fair_share,
)

TTL, MARGIN = 6.0, 2.0


def machine(node: str = "a", partitions: int = 4) -> Ownership:
    m = Ownership(node, partitions, TTL, MARGIN)
    m.lease_granted(0.0)
    return m


def own_all(m: Ownership, now: float, nodes: set[str]) -> dict[int, Owner]:
    """Observe, claim what the machine asks for (epochs 10, 11, ...), return the owners."""
    owners: dict[int, Owner] = {}
    for i, a in enumerate(m.observe(now, nodes, owners)):
        assert isinstance(a, Claim)
        (start,) = m.claimed(a.partition, 10 + i)
        assert start == Start(a.partition, 10 + i)
        owners[a.partition] = Owner(m.node, 10 + i)
    return owners


def test_fair_share() -> None:
    assert [fair_share(8, n) for n in (1, 2, 3, 4, 8, 9)] == [8, 4, 3, 2, 1, 1]
    assert fair_share(8, 0) == 8


def test_a_lone_node_claims_every_vacant_partition() -> None:
    m = machine()
    owners = own_all(m, 0.1, {"a"})
    assert m.owned() == [0, 1, 2, 3]
    assert m.epochs() == {0: 10, 1: 11, 2: 12, 3: 13}
    assert m.observe(0.5, {"a"}, owners) == []  # nothing more to do


def test_claims_only_partitions_without_an_owner_and_at_most_the_fair_share() -> None:
    m = machine("b")
    owners = {0: Owner("a", 3), 1: Owner("a", 4)}
    acts = m.observe(0.1, {"a", "b"}, owners)
    assert acts == [Claim(2), Claim(3)]


def test_a_lost_race_returns_to_standby() -> None:
    m = machine()
    (c, *_) = m.observe(0.1, {"a", "b"}, {})
    m.claim_failed(c.partition)
    assert m.state[c.partition] is PartitionState.STANDBY


def test_a_joining_node_gets_work_one_release_at_a_time() -> None:
    m = machine()
    owners = own_all(m, 0.1, {"a"})
    acts = m.observe(1.0, {"a", "b"}, owners)
    assert acts == [Release(3, 13)]  # the highest, one per observation
    assert m.observe(1.5, {"a", "b"}, owners) == []  # over share but releasing: wait
    m.released(3)
    del owners[3]
    assert m.observe(2.0, {"a", "b"}, owners) == [Release(2, 12)]
    m.released(2)
    del owners[2]
    assert m.observe(2.5, {"a", "b"}, owners) == []
    assert m.owned() == [0, 1]


def test_steps_down_before_the_lease_can_expire() -> None:
    m = machine()
    own_all(m, 0.1, {"a"})
    m.renewed(1.0)  # a keep-alive sent at 1.0 came back
    assert m.tick(1.0 + TTL - MARGIN - 0.01) == []
    stops = m.tick(1.0 + TTL - MARGIN)
    assert stops == [Stop(k, "lease not renewed for 4.0 s") for k in range(4)]
    assert all(s is PartitionState.FENCED for s in m.state)
    assert not m.has_lease
    # strictly before the earliest moment etcd can expire the lease (sent + ttl)
    assert 1.0 + TTL - MARGIN < 1.0 + TTL


def test_a_late_answer_does_not_move_the_deadline_back() -> None:
    m = machine()
    m.renewed(3.0)
    m.renewed(2.0)  # an older keep-alive's answer arriving late
    assert m.deadline() == 3.0 + TTL - MARGIN


def test_no_claim_while_fenced_and_no_claim_without_a_lease() -> None:
    m = machine()
    owners = own_all(m, 0.1, {"a"})
    m.tick(100.0)
    for k in range(4):
        m.stopped(k)
    # our old keys still stand in etcd (old lease): nothing vacant, and no lease anyway
    assert m.observe(100.1, {"a"}, owners) == []
    assert m.observe(100.2, {"a"}, {}) == []
    m.lease_granted(101.0)
    assert [type(a) for a in m.observe(101.1, {"a"}, {})] == [Claim] * 4


def test_a_claim_answered_after_the_step_down_never_starts() -> None:
    m = machine()
    (c, *_) = m.observe(0.1, {"a"}, {})
    m.tick(TTL)  # fenced while the claim was in flight
    assert m.claimed(c.partition, 42) == []
    assert m.state[c.partition] is PartitionState.STANDBY


def test_a_key_gone_or_taken_stops_the_partition_at_once() -> None:
    m = machine()
    owners = own_all(m, 0.1, {"a"})
    owners[1] = Owner("b", 99)
    del owners[2]
    acts = m.observe(1.0, {"a", "b"}, owners)
    assert Stop(1, "owned by b") in acts
    assert Stop(2, "owner key gone") in acts
    assert m.owned() == [0, 3]


def test_lease_expired_answer_stops_everything() -> None:
    m = machine()
    own_all(m, 0.1, {"a"})
    assert [type(a) for a in m.lease_lost()] == [Stop] * 4


def test_a_refused_save_stops_that_partition() -> None:
    m = machine()
    own_all(m, 0.1, {"a"})
    assert m.lost(2, "refused") == [Stop(2, "refused")]
    assert m.lost(2, "again") == []


def test_misuse_raises() -> None:
    m = machine()
    with pytest.raises(Misuse):
        m.claimed(0, 1)  # never claimed
    with pytest.raises(ValueError):
        Ownership("a", 0, TTL, MARGIN)
    with pytest.raises(ValueError):
        Ownership("a", 4, TTL, TTL)


def test_every_state_can_come_back_to_standby() -> None:
    reach = {PartitionState.STANDBY}
    changed = True
    while changed:  # states from which STANDBY is reachable
        changed = False
        for (src, _), dst in TRANSITIONS.items():
            if dst in reach and src not in reach:
                reach.add(src)
                changed = True
    assert reach == set(PartitionState)
