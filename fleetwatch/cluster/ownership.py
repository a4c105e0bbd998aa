"""Who owns which partition, and when to let go: the pure core of an engine node.

The node's adapter (:mod:`fleetwatch.cluster.node`) feeds this machine what it
learns from etcd — a lease renewal that succeeded (with the time the request was
*sent*), the live nodes and the owner keys — and the time; the machine answers
with actions to carry out. It never awaits and never reads a clock, so the tests
drive it with a fake one.

Per partition, an explicit transition table (h11's habit)::

    STANDBY  --claim-->  CLAIMING  --claimed(epoch)-->  OWNED   (action Start)
    CLAIMING --claim_failed-->  STANDBY
    OWNED    --over the fair share-->  RELEASING  (action Release: flush, ack, save, delete key)
    RELEASING --released-->  STANDBY
    OWNED | CLAIMING | RELEASING  --not renewed for ttl - margin-->  FENCED  (action Stop)
    FENCED   --stopped-->  STANDBY

**Fencing.** etcd expires a lease ``lease_ttl_s`` after the last keep-alive it
processed, and a keep-alive is processed after it is sent; so from the moment
the last *successful* keep-alive was sent, this node's keys live at least
``lease_ttl_s`` more. The machine steps down (stops consuming, without acking)
at ``sent + lease_ttl_s - step_down_margin_s``: strictly before the key can
vanish and another node can create it. The margin covers the time to stop the
partition's consumer and the clock-rate drift between this host and etcd's.

**Fair share.** A node owns at most ``ceil(partitions / live nodes)``; a node over it
releases one partition per observation (the highest-numbered), so a joining node
gets work without a stop-the-world rebalance.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "TRANSITIONS",
    "Claim",
    "Owner",
    "Ownership",
    "PartitionState",
    "Release",
    "Start",
    "Stop",
    "fair_share",
]


class PartitionState(enum.Enum):
    STANDBY = "standby"
    CLAIMING = "claiming"
    OWNED = "owned"
    RELEASING = "releasing"
    FENCED = "fenced"


S = PartitionState

# (state, event) -> next state. Anything else is a misuse of the machine (raised).
TRANSITIONS: Mapping[tuple[PartitionState, str], PartitionState] = {
    (S.STANDBY, "claim"): S.CLAIMING,
    (S.CLAIMING, "claimed"): S.OWNED,
    (S.CLAIMING, "claim_failed"): S.STANDBY,
    (S.OWNED, "release"): S.RELEASING,
    (S.RELEASING, "released"): S.STANDBY,
    (S.OWNED, "fence"): S.FENCED,
    (S.CLAIMING, "fence"): S.FENCED,
    (S.RELEASING, "fence"): S.FENCED,
    (S.OWNED, "lost"): S.FENCED,  # the key is gone or someone else's: stop at once
    (S.FENCED, "stopped"): S.STANDBY,
    (S.FENCED, "claimed"): S.STANDBY,  # the claim came back after a step-down: never start
}


@dataclass(frozen=True, slots=True)
class Owner:
    """The value of ``{prefix}/partitions/{k}/owner``: a node and the epoch of its claim
    (the etcd revision that created the key: higher for every later owner)."""

    node: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Claim:
    partition: int


@dataclass(frozen=True, slots=True)
class Start:
    partition: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Release:
    """Stop cleanly (flush, ack, save the state), then delete the key."""

    partition: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop consuming now, without acknowledging (fenced or lost): the next owner gets the
    unacknowledged messages from the partition's persistent session."""

    partition: int
    reason: str


Action = Claim | Start | Release | Stop


def fair_share(partitions: int, live_nodes: int) -> int:
    """At most this many partitions per node."""
    return math.ceil(partitions / max(1, live_nodes))


class Misuse(RuntimeError):
    """An event the current state does not allow (a bug in the adapter)."""


class Ownership:
    """One node's view. Feed events, read actions; time in seconds, passed in."""

    def __init__(self, node: str, partitions: int, lease_ttl_s: float, margin_s: float) -> None:
        if partitions <= 0:
            raise ValueError("a cluster needs partitions > 0")
        if not 0 < margin_s < lease_ttl_s:
            raise ValueError("step-down margin must lie in (0, lease_ttl_s)")
        self.node = node
        self.partitions = partitions
        self.ttl = lease_ttl_s
        self.margin = margin_s
        self.state = [S.STANDBY] * partitions
        self.epoch = [0] * partitions
        self._renewed_sent: float | None = None  # send time of the last good keep-alive
        self.live_nodes = 1

    # -- events ---------------------------------------------------------------------------

    def _go(self, k: int, event: str) -> None:
        nxt = TRANSITIONS.get((self.state[k], event))
        if nxt is None:
            raise Misuse(f"partition {k}: {event!r} in state {self.state[k].value}")
        self.state[k] = nxt

    def lease_granted(self, sent_at: float) -> None:
        """A new lease (after start or a step-down); ``sent_at`` = when the grant was sent."""
        self._renewed_sent = sent_at

    def renewed(self, sent_at: float) -> None:
        """A keep-alive sent at ``sent_at`` came back with the lease alive."""
        if self._renewed_sent is None or sent_at > self._renewed_sent:
            self._renewed_sent = sent_at

    def lease_lost(self) -> list[Action]:
        """etcd says the lease expired (keep-alive answered TTL ≤ 0): stop everything."""
        self._renewed_sent = None
        return self._fence_all("lease expired")

    @property
    def has_lease(self) -> bool:
        return self._renewed_sent is not None

    def deadline(self) -> float | None:
        """When this node must have stopped consuming, unless renewed before."""
        if self._renewed_sent is None:
            return None
        return self._renewed_sent + self.ttl - self.margin

    def tick(self, now: float) -> list[Action]:
        """The fencing check; call often (independently of etcd calls that may hang)."""
        d = self.deadline()
        if d is not None and now >= d:
            self._renewed_sent = None  # this lease is as good as gone: get a new one
            return self._fence_all(f"lease not renewed for {self.ttl - self.margin:.1f} s")
        return []

    def _fence_all(self, reason: str) -> list[Action]:
        out: list[Action] = []
        for k, s in enumerate(self.state):
            if s in (S.OWNED, S.CLAIMING, S.RELEASING):
                self._go(k, "fence")
                out.append(Stop(k, reason))
        return out

    def observe(self, now: float, nodes: set[str], owners: Mapping[int, Owner]) -> list[Action]:
        """What etcd holds now: the live node names and the owner of each owned partition.
        Returns the claims to try, the releases to make, the partitions lost."""
        out: list[Action] = list(self.tick(now))
        self.live_nodes = max(1, len(nodes | {self.node}))
        for k, s in enumerate(self.state):
            o = owners.get(k)
            if s is S.OWNED and (o is None or o != Owner(self.node, self.epoch[k])):
                self._go(k, "lost")
                out.append(Stop(k, "owner key gone" if o is None else f"owned by {o.node}"))
        if not self.has_lease:
            return out  # no claim without a lease that is known alive
        if any(s in (S.RELEASING, S.FENCED) for s in self.state):
            return out  # finish letting go first (one release at a time)
        share = fair_share(self.partitions, self.live_nodes)
        mine = [k for k, s in enumerate(self.state) if s in (S.OWNED, S.CLAIMING)]
        if len(mine) > share:
            owned = [k for k in mine if self.state[k] is S.OWNED]
            if owned:
                k = max(owned)
                self._go(k, "release")
                out.append(Release(k, self.epoch[k]))
            return out
        room = share - len(mine)
        for k in range(self.partitions):
            if room <= 0:
                break
            if self.state[k] is S.STANDBY and k not in owners:
                self._go(k, "claim")
                out.append(Claim(k))
                room -= 1
        return out

    def claimed(self, k: int, epoch: int) -> list[Action]:
        """The create transaction succeeded; ``epoch`` is its revision. Nothing starts when
        the node stepped down meanwhile (the key dies with the old lease)."""
        fenced = self.state[k] is S.FENCED
        self._go(k, "claimed")
        if fenced:
            return []
        self.epoch[k] = epoch
        return [Start(k, epoch)]

    def claim_failed(self, k: int) -> None:
        """Another node created the key first (or etcd did not answer)."""
        if self.state[k] is S.CLAIMING:
            self._go(k, "claim_failed")

    def lost(self, k: int, reason: str) -> list[Action]:
        """The adapter learnt the partition is someone else's (a refused fenced save)."""
        if self.state[k] is not S.OWNED:
            return []
        self._go(k, "lost")
        return [Stop(k, reason)]

    def released(self, k: int) -> None:
        if self.state[k] is S.RELEASING:
            self._go(k, "released")

    def stopped(self, k: int) -> None:
        if self.state[k] is S.FENCED:
            self._go(k, "stopped")

    # -- views ----------------------------------------------------------------------------

    def owned(self) -> list[int]:
        return [k for k, s in enumerate(self.state) if s is S.OWNED]

    def epochs(self) -> dict[int, int]:
        return {k: self.epoch[k] for k in self.owned()}
