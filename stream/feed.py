"""The live feed core: latest position per vehicle, alarms, and per-client frames.

Pure and synchronous (sans-I/O, like ``websockets.protocol``): feed it position
batches and alarm events, ask it which frames are due at ``now_ms``, and drain
each client's outbox. :mod:`stream.server` is the asyncio adapter around it.

Frames are JSON text, encoded once (orjson) and shared by every client that
needs the same bytes — see ARCHITECTURE.md, "Live feed"::

    {"type": "snapshot", "seq", "node", "gid", "resume", "gap", "vehicles": [...], "alarms": [...]}
    {"type": "positions", "seq", "items": [...]}   latest per vehicle since the last frame
    {"type": "alarm", "seq", "gid", "alarm": {...}}  never dropped, never conflated

``seq`` is this node's counter: every accepted position batch, alarm change and
state change (a vehicle going offline) takes the next value. ``gid`` is the alarm's
*global* id, the same on every web node: the Redis Stream entry id the alarm came
in with (:mod:`stream.relay`; absent for an alarm this node showed on its own
while Redis was down). Both index a ring of recent alarm frames.

Resume (:meth:`FeedCore.connect`): a page reconnects with the ``node`` of its last
snapshot, its ``last_seq`` and its ``last_gid``. Back on the same node, the ring
frames after ``last_seq`` follow the snapshot (``resume: "seq"``); on another node
(its own died, the load balancer moved it) the ring frames after ``last_gid``
(``resume: "gid"``). The ring covers the gids after :attr:`FeedCore.gid_floor`;
when ``last_gid`` is older than that — or the page brings no gid from another node
— some alarm changes may be missing: the snapshot (which holds every open and every
unacknowledged alarm) comes with ``gap: true``, and the page says so.

Conflation: each vehicle carries the ``seq`` of its last change; each client the
``seq`` its last delivered frame was built at (its *basis*). The dirty set of a
client is therefore ``changed_seq > basis`` — one array comparison instead of a
Python set per client. Position frames due while the previous one still waits in
the client's outbox replace it (the old one is *superseded*: dropped and
counted); alarm frames queue behind it. Replies to the client's own requests
(pongs, errors) go through the same outbox (:meth:`FeedCore.reply`): an outbox
that grows past ``client_buffer`` frames, whatever they are, marks the client
for disconnection, so a client that sends without reading cannot grow memory.

Limits (:class:`FeedLimits`): the size of one client message, the number of
vehicle ids and organisations in one subscription. A subscription's visibility
mask is cached while some client uses it and released with its last client.

Handling history: an alarm item carries ``ack`` (the first acknowledgement) and
``acks`` (every entry, oldest first, ``{"user", "note", "at", "action"}`` with
action ``ack | close | note``). It is kept while the feed holds the alarm, then
for the ``closed_alarms_kept`` alarms that left the desk last (a late update of a
closed episode still shows it); nothing else is kept.

Call order: :meth:`FeedCore.connect` (queues a snapshot), optionally
:meth:`FeedCore.subscribe` (queues a new snapshot), then repeatedly
:meth:`FeedCore.frames_due` and :meth:`FeedCore.drain`; :meth:`FeedCore.disconnect`
at the end.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fleet.batch import PositionBatch, latest_rows
from fleet.errors import BadRecord, Misuse
from fleet.events import AlarmEvent
from fleet.registry import Registry, grown
from fleet.vehicle_state import STATES, VehicleStateConfig
from fleet.vehicle_state import states as vehicle_states

__all__ = [
    "STATES",
    "FeedCore",
    "FeedLimits",
    "FeedStats",
    "Subscription",
    "latest_per_vehicle",
    "latest_per_vehicle_reference",
    "parse_client_message",
]

# The vehicle states and their codes are the kernel's (fleet.vehicle_state), re-exported.
_NONE = -1  # "no state shown yet"

BBox = tuple[float, float, float, float]  # west, south, east, north (WGS-84 degrees)
Array = npt.NDArray[Any]


def latest_per_vehicle(vehicle: Array, ts: Array, current_ts: Array) -> Array:
    """Row indices holding each vehicle's newest position, if not older than ``current_ts``.

    Among rows of one vehicle the greatest ``ts`` wins, ties going to the later
    row. The winner is kept only if ``ts >= current_ts[vehicle]`` (a back-filled
    older point never moves the live marker back). Returns indices in vehicle order.
    """
    rows = latest_rows(vehicle, ts)
    return rows[ts[rows] >= current_ts[vehicle[rows]]]


def latest_per_vehicle_reference(vehicle: Array, ts: Array, current_ts: Array) -> Array:
    """Scalar twin of :func:`latest_per_vehicle`, for tests."""
    best: dict[int, int] = {}
    cur = {int(v): int(current_ts[int(v)]) for v in vehicle.tolist()}
    for i, (v, t) in enumerate(zip(vehicle.tolist(), ts.tolist(), strict=True)):
        if t >= cur[v]:
            cur[v] = t
            best[v] = i
    return np.array([best[v] for v in sorted(best)], dtype=np.intp)


@dataclass(frozen=True, slots=True)
class FeedLimits:
    """What one live feed client may ask for at once.

    A city-wide desk follows organisations, not lists of vehicles; a few thousand
    ids cover any hand-picked group. Larger requests are refused with an error
    frame before they are parsed (a 1.2 M-id subscribe stalled the event loop for
    a second and left 500 MiB behind).
    """

    max_message_bytes: int = 256 * 1024
    max_vehicles: int = 5_000
    max_orgs: int = 500

    def __post_init__(self) -> None:
        if min(self.max_message_bytes, self.max_vehicles, self.max_orgs) < 1:
            raise Misuse("FeedLimits must all be >= 1")


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a client asked for. Each filter given narrows the set; none means everything.

    ``orgs`` select their subtrees; ``vehicles`` are vehicle ids; ``bbox`` is
    ``(west, south, east, north)`` and applies to positions only — alarms of the
    selected vehicles are delivered wherever the vehicle is.
    """

    orgs: tuple[str, ...] = ()
    vehicles: tuple[str, ...] = ()
    bbox: BBox | None = None

    @classmethod
    def from_message(cls, msg: dict[str, Any], limits: FeedLimits | None = None) -> Subscription:
        """Validate a ``{"op": "subscribe", ...}`` message. Raises :class:`BadRecord`."""
        lim = limits or FeedLimits()
        orgs = msg.get("orgs") or []
        vehicles = msg.get("vehicles") or []
        bbox = msg.get("bbox")
        if isinstance(orgs, list) and len(orgs) > lim.max_orgs:
            raise BadRecord(
                "subscription_too_large",
                f"{len(orgs)} organisations; at most {lim.max_orgs} in one subscription",
            )
        if isinstance(vehicles, list) and len(vehicles) > lim.max_vehicles:
            raise BadRecord(
                "subscription_too_large",
                f"{len(vehicles)} vehicle ids; at most {lim.max_vehicles} in one subscription"
                " (follow organisations instead)",
            )
        if not isinstance(orgs, list) or not all(isinstance(o, str) for o in orgs):
            raise BadRecord("bad_subscription", "orgs must be a list of organisation ids")
        if not isinstance(vehicles, list) or not all(isinstance(v, str) for v in vehicles):
            raise BadRecord("bad_subscription", "vehicles must be a list of vehicle ids")
        box: BBox | None = None
        if bbox is not None:
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in bbox)
            ):
                raise BadRecord("bad_subscription", "bbox must be [west, south, east, north]")
            w, s, e, n = (float(x) for x in bbox)
            if not (w <= e and s <= n):
                raise BadRecord("bad_subscription", "bbox needs west <= east and south <= north")
            box = (w, s, e, n)
        return cls(tuple(orgs), tuple(vehicles), box)


@dataclass
class FeedStats:
    """Counters for /metrics. Monotonic except ``clients``."""

    clients: int = 0
    frames_positions: int = 0
    frames_alarm: int = 0
    frames_snapshot: int = 0
    items_sent: int = 0
    encodes: int = 0
    superseded: int = 0
    slow_disconnects: int = 0
    replies: int = 0
    refused_requests: int = 0
    resumes: int = 0  # reconnects that got exactly the alarm frames they missed
    resume_gaps: int = 0  # reconnects told that some may be missing (gap: true)


@dataclass
class _Client:
    visible: Array  # bool per vehicle: token subtree ∩ orgs ∩ vehicles
    sub: Subscription
    key: tuple[Any, ...]  # equal keys → equal masks → shareable frame bytes
    basis: int = 0  # seq of the last position/snapshot frame drained
    pending_basis: int = 0  # seq of the position frame waiting in the outbox
    last_frame_ms: int = -(2**62)
    outbox: deque[tuple[str, int, bytes]] = field(default_factory=deque)
    overflow: bool = False
    # a resume's replayed alarm frames, queued at once: they do not count against
    # client_buffer until the first drain (bounded by the ring, alarm_ring)
    replay_allowance: int = 0


@dataclass(frozen=True, slots=True)
class _RingEntry:
    seq: int
    vehicle: int
    frame: bytes
    gid: tuple[int, int] | None = None


def gid_key(gid: str) -> tuple[int, int]:
    """A global alarm id (a Redis Stream id ``"<ms>-<n>"``) as a sortable pair.

    Raises :class:`BadRecord` for anything else."""
    ms, sep, n = gid.partition("-")
    if not (ms.isdigit() and (not sep or n.isdigit())) or len(gid) > 41:
        raise BadRecord("bad_gid", f"{gid[:48]!r} is not an alarm id like 1764034200000-0")
    return int(ms), int(n or 0)


class FeedCore:
    """Latest state of the fleet and the frames each connected client should get.

    ``interval_ms`` is the shortest time between two position frames to one
    client; ``client_buffer`` the outbox size (all frames: positions, alarms,
    replies) past which a client is cut off;
    ``alarm_ring`` how many alarm frames are kept for replay to reconnecting
    clients; ``vehicle_state`` (``[vehicle_state]``) decides moving / parked / offline
    (:mod:`fleet.vehicle_state`, the same definition as the live state and the rules).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        interval_ms: int = 500,
        client_buffer: int = 256,
        alarm_ring: int = 4096,
        vehicle_state: VehicleStateConfig | None = None,
        closed_alarms_kept: int = 500,
        limits: FeedLimits | None = None,
        node: str = "",
    ) -> None:
        if interval_ms <= 0 or client_buffer < 1 or alarm_ring < 1:
            raise Misuse("FeedCore needs interval_ms > 0, client_buffer >= 1, alarm_ring >= 1")
        self.registry = registry
        self.interval_ms = interval_ms
        self.client_buffer = client_buffer
        self.vehicle_state = vehicle_state or VehicleStateConfig()
        self.limits = limits or FeedLimits()
        self.seq = 0
        #: this node's name, sent in snapshots (the page brings it back to tell a resume
        #: on the same node from a move); set by the adapter
        self.node = node
        #: the greatest global alarm id taken in, and the one below which the ring is not
        #: complete (None: no alarm history known, every resume by gid is a gap)
        self.last_gid: str | None = None
        self.gid_floor: str | None = None
        self.stats = FeedStats()
        n = len(registry)
        self._n = n
        self.ts = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
        self.lat = np.zeros(n, dtype=np.float64)
        self.lon = np.zeros(n, dtype=np.float64)
        self.speed = np.zeros(n, dtype=np.float32)
        self.heading = np.zeros(n, dtype=np.int16)
        self.acc = np.zeros(n, dtype=bool)
        self.has = np.zeros(n, dtype=bool)
        self.alarms_open = np.zeros(n, dtype=np.int32)
        self.state = np.full(n, _NONE, dtype=np.int8)
        self.changed_seq = np.zeros(n, dtype=np.int64)
        self._item_seq = np.full(n, -1, dtype=np.int64)  # changed_seq the cached bytes show
        self._items: list[bytes] = [b""] * n
        self._org_ids = [registry.org_of(i) for i in range(n)]
        self._alarms: dict[str, dict[str, Any]] = {}  # open, plus closed still unacknowledged
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._closed_kept = closed_alarms_kept
        # Handling records: of alarms in _alarms, then of the last ones that left the desk.
        self._acks: dict[str, list[dict[str, Any]]] = {}
        self._acks_done: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._ring: deque[_RingEntry] = deque(maxlen=alarm_ring)
        self._clients: dict[int, _Client] = {}
        # Visibility masks by filter, with the number of clients using each.
        self._masks: dict[tuple[Any, ...], tuple[Array, int]] = {}
        self._ready: set[int] = set()
        self._closing: list[int] = []
        self._now_ms = 0
        #: called (without arguments) when an alarm made some outbox non-empty
        self.on_ready: Callable[[], None] | None = None
        self._reg_version = registry.version

    def follow_registry(self) -> None:
        """The registry changed (a vehicle added, changed, retired — the records issue):
        grow the per-vehicle arrays, re-read organisations and plates, rebuild the masks.
        Every entry point calls it when ``registry.version`` moved."""
        reg = self.registry
        n = len(reg)
        if n > self._n:
            for name, fill in (
                ("ts", np.iinfo(np.int64).min),
                ("lat", 0.0),
                ("lon", 0.0),
                ("speed", 0.0),
                ("heading", 0),
                ("acc", False),
                ("has", False),
                ("alarms_open", 0),
                ("state", _NONE),
                ("changed_seq", 0),
                ("_item_seq", -1),
            ):
                setattr(self, name, grown(getattr(self, name), n, fill))
            self._items += [b""] * (n - self._n)
            self._n = n
        changed = reg.changed_since(self._reg_version)
        if changed is None:
            self._org_ids = [reg.org_of(i) for i in range(n)]
            self._item_seq[:] = -1  # plates or organisations may have changed: encode again
        else:
            self._org_ids += [""] * (n - len(self._org_ids))
            for i in changed:
                self._org_ids[i] = reg.org_of(i)
            self._item_seq[changed] = -1
        self._masks.clear()
        for c in self._clients.values():
            c.visible = self._new_client(c.key[0], c.sub).visible
        self._reg_version = reg.version

    def _sync(self) -> None:
        if self._reg_version != self.registry.version:
            self.follow_registry()

    # -- input ------------------------------------------------------------------------------

    def positions(self, batch: PositionBatch) -> int:
        """Take in a batch; returns how many vehicles moved on. Call in arrival order."""
        self._sync()
        if not len(batch):
            return 0
        vehicle = batch.vehicle
        if int(vehicle.min()) < 0 or int(vehicle.max()) >= self._n:
            raise Misuse("batch.vehicle holds an index outside the registry")
        rows = latest_per_vehicle(vehicle, batch.ts, self.ts)
        if rows.shape[0] == 0:
            return 0
        v = vehicle[rows]
        self.seq += 1
        self.ts[v] = batch.ts[rows]
        self.lat[v] = batch.lat[rows]
        self.lon[v] = batch.lon[rows]
        self.speed[v] = batch.speed[rows]
        self.heading[v] = batch.heading[rows]
        self.acc[v] = batch.acc[rows]
        self.has[v] = True
        self.changed_seq[v] = self.seq
        return int(rows.shape[0])

    def alarm(self, event: AlarmEvent, gid: str | None = None) -> list[int]:
        """Take in one alarm change; queue its frame to every client that sees the vehicle.

        ``gid`` is its global id (Stream order: each greater than the last). Events found
        in back-fill are recorded elsewhere and never shown live. Returns the clients
        whose outbox grew.
        """
        self._sync()
        if event.backfill:
            return []
        v = event.vehicle
        if not 0 <= v < self._n:
            raise Misuse(f"alarm for vehicle index {v} outside the registry")
        was_open = event.id in self._alarms and self._alarms[event.id]["state"] == "open"
        item = self._alarm_item(event)
        if event.action == "close":
            if was_open:
                self.alarms_open[v] -= 1
            if item["ack"] is None:
                self._hold(event.id, item)
                self._closed[event.id] = None
                self._trim_closed()
            else:
                self._release(event.id)
        else:
            if not was_open:
                self.alarms_open[v] += 1
            self._hold(event.id, item)
        return self._publish_alarm(v, item, gid)

    def remember(self, event: AlarmEvent, gid: str) -> None:
        """Put an alarm this node already showed (without gid, Redis being down) into the
        ring under the gid it later got, so a page moving here from another node still
        gets it; its state and the clients are not touched."""
        self._sync()
        if event.backfill or not 0 <= event.vehicle < self._n:
            return
        held = self._alarms.get(event.id)
        item = held if held is not None else self._alarm_item(event)
        self.seq += 1
        frame = self._alarm_frame(self.seq, gid, item)
        self._ring_add(_RingEntry(self.seq, event.vehicle, frame, self._take_gid(gid)))

    def note_gid(self, gid: str) -> None:
        """A global id was taken in without a frame here (an acknowledgement this node
        already showed): the snapshot's ``gid`` moves past it."""
        self._take_gid(gid)

    def start_history(self, floor: str) -> None:
        """The ring is complete for the gids after ``floor`` from now on (the relay read the
        Stream from there, or found it trimmed to there)."""
        key = gid_key(floor)
        if self.gid_floor is None or key > gid_key(self.gid_floor):
            self.gid_floor = floor
        if self.last_gid is None or key > gid_key(self.last_gid):
            self.last_gid = floor

    def acknowledge(
        self, alarm_id: str, entry: dict[str, Any], gid: str | None = None
    ) -> list[int]:
        """Add one entry to an alarm's handling record and tell every desk.

        ``entry`` is ``{"user", "note", "at", "action"}`` (action ``ack | close |
        note``; a missing one is ``ack``). The first entry becomes the alarm's
        ``ack``; later ones only append to ``acks``, never replace it. Returns the
        clients whose outbox grew; an alarm the feed no longer holds keeps the
        record among the last ``closed_alarms_kept`` only.
        """
        e = {"action": "ack", **entry}
        held = self._alarms.get(alarm_id)
        if held is not None:
            record = self._acks.setdefault(alarm_id, [])
        else:
            record = self._acks_done.setdefault(alarm_id, [])
            self._acks_done.move_to_end(alarm_id)
            self._trim_acks_done()
        record.append(e)
        if held is None:
            if gid is not None:
                self._take_gid(gid)
            return []
        item = {**held, "ack": record[0], "acks": list(record)}
        if item["state"] == "closed":
            self._closed.pop(alarm_id, None)
            self._release(alarm_id)
        else:
            self._alarms[alarm_id] = item
        v = self.registry.by_id(item["vehicle"])
        return self._publish_alarm(v if v is not None else 0, item, gid)

    def handling(self, alarm_id: str) -> list[dict[str, Any]]:
        """The handling record the feed keeps for an alarm, oldest first (empty if none)."""
        record = self._acks.get(alarm_id)
        if record is None:
            record = self._acks_done.get(alarm_id)
        return list(record or ())

    @property
    def handling_kept(self) -> int:
        """How many alarms' handling records the feed holds (bounded; see the module doc)."""
        return len(self._acks) + len(self._acks_done)

    # -- clients ----------------------------------------------------------------------------

    def connect(
        self,
        client: int,
        visible_org: str,
        now_ms: int,
        last_seq: int | None = None,
        *,
        last_gid: str | None = None,
        from_node: str | None = None,
    ) -> str:
        """Register a client allowed to see ``visible_org``'s subtree; queue its snapshot.

        Then the ring's alarm frames the client missed (module doc, "Resume"): after
        ``last_seq`` when ``from_node`` is this node (or not given: an older page), after
        ``last_gid`` when it came from another node. Returns how it resumed: ``none``,
        ``seq``, ``gid`` or ``gap``. A malformed ``last_gid`` raises :class:`BadRecord`.
        """
        after = gid_key(last_gid) if last_gid is not None else None
        if client in self._clients:
            raise Misuse(f"client {client} is already connected")
        self._sync()
        if visible_org not in self.registry.orgs.ids:
            raise Misuse(f"unknown organisation {visible_org!r}")
        self._now_ms = now_ms
        c = self._new_client(visible_org, Subscription())
        self._clients[client] = c
        self.stats.clients = len(self._clients)
        same_node = from_node is None or from_node == self.node
        if last_seq is not None and same_node and last_seq <= self.seq:
            resume = "seq"
            replay = [e for e in self._ring if e.seq > last_seq]
        elif after is not None:
            floor = gid_key(self.gid_floor) if self.gid_floor is not None else None
            resume = "gid" if floor is not None and after >= floor else "gap"
            replay = [e for e in self._ring if e.gid is not None and e.gid > after]
        elif from_node is not None and last_seq is not None:
            # a page from another node that never saw a global id: nothing to resume by
            resume, replay = "gap", []
        else:
            resume, replay = "none", []
        if resume == "gap":
            self.stats.resume_gaps += 1
        elif resume != "none":
            self.stats.resumes += 1
        self._queue_snapshot(client, c, now_ms, resume)
        # A page that was away while many alarms came gets them all; a replay longer than
        # client_buffer must not cut it off as slow (it would reconnect and be cut off
        # again, for ever: seen under the failover bench's alarm bursts).
        replay = [e for e in replay if c.visible[e.vehicle]]
        c.replay_allowance = len(replay)
        for entry in replay:
            self._push(client, c, "alarm", entry.seq, entry.frame)
        return resume

    def subscribe(self, client: int, sub: Subscription, now_ms: int) -> None:
        """Change what a client follows; queue a fresh snapshot. Raises :class:`BadRecord`."""
        c = self._client(client)
        lim = self.limits
        if len(sub.orgs) > lim.max_orgs or len(sub.vehicles) > lim.max_vehicles:
            raise BadRecord(
                "subscription_too_large",
                f"at most {lim.max_orgs} organisations and {lim.max_vehicles} vehicle ids",
            )
        known = self.registry.orgs.ids
        for o in sub.orgs:
            if o not in known:
                raise BadRecord("bad_subscription", f"unknown organisation {o!r}")
        for vid in sub.vehicles:
            if self.registry.by_id(vid) is None:
                raise BadRecord("bad_subscription", f"unknown vehicle {vid!r}")
        org = c.key[0]
        fresh = self._new_client(org, sub)
        fresh.last_frame_ms = c.last_frame_ms
        # A pending position frame was built for the old filter; the snapshot replaces it.
        fresh.outbox = deque(f for f in c.outbox if f[0] in ("alarm", "reply"))
        fresh.replay_allowance = c.replay_allowance
        self._clients[client] = fresh
        self._unuse_mask(c)
        self._queue_snapshot(client, fresh, now_ms)

    def resync(self, now_ms: int) -> int:
        """Queue a fresh snapshot to every client (after the feed missed changes, e.g. a
        Redis outage between nodes). Pending position frames are superseded by it; alarm
        frames already queued stay. Returns the number of clients."""
        for cid, c in list(self._clients.items()):
            if any(kind == "positions" for kind, _, _ in c.outbox):
                c.outbox = deque(f for f in c.outbox if f[0] != "positions")
                self.stats.superseded += 1
            self._queue_snapshot(cid, c, now_ms)
        if self._clients and self.on_ready is not None:
            self.on_ready()
        return len(self._clients)

    def disconnect(self, client: int) -> None:
        c = self._clients.pop(client, None)
        if c is not None:
            self._unuse_mask(c)
        self._ready.discard(client)
        self.stats.clients = len(self._clients)

    def connected(self, client: int) -> bool:
        """False once the client left or was cut off (outbox overflow)."""
        return client in self._clients

    def reply(self, client: int, frame: bytes) -> bool:
        """Queue an answer to the client's own request (pong, error) behind its other frames.

        It counts towards ``client_buffer`` like any frame. Returns False if the
        client is not (or no longer) connected.
        """
        c = self._clients.get(client)
        if c is None:
            return False
        self.stats.replies += 1
        self._push(client, c, "reply", self.seq, frame)
        return client in self._clients

    @property
    def ring_size(self) -> int:
        """How many alarm frames the ring keeps (``alarm_ring``)."""
        return self._ring.maxlen or 0

    @property
    def cached_filters(self) -> int:
        """Visibility masks held for the subscriptions of connected clients."""
        return len(self._masks)

    def drain(self, client: int) -> list[bytes]:
        """Hand over everything queued for ``client``, oldest first (seq order)."""
        c = self._clients.get(client)
        if c is None or not c.outbox:
            return []
        out = []
        for kind, seq, frame in c.outbox:
            if kind in ("positions", "snapshot"):
                c.basis = max(c.basis, seq)
            out.append(frame)
        c.outbox.clear()
        c.replay_allowance = 0
        self._ready.discard(client)
        return out

    def take_ready(self) -> set[int]:
        """Clients with a non-empty outbox since the last call."""
        ready, self._ready = self._ready, set()
        return ready

    def take_closing(self) -> list[int]:
        """Clients whose outbox overflowed: close them (they are already disconnected here)."""
        out, self._closing = self._closing, []
        return out

    def pending(self, client: int) -> int:
        c = self._clients.get(client)
        return len(c.outbox) if c else 0

    @property
    def clients(self) -> Sequence[int]:
        return list(self._clients)

    # -- frames -----------------------------------------------------------------------------

    def frames_due(self, now_ms: int) -> list[tuple[int, bytes]]:
        """Build the position frames due at ``now_ms`` and queue them to their clients.

        At most one frame per client per ``interval_ms``, holding the latest item of
        each vehicle that changed since the client's last delivered frame and that
        it may see. Clients with nothing new get nothing. Returns ``(client, frame)``.
        """
        self._sync()
        self._now_ms = now_ms
        self._refresh_states(now_ms)
        shared: dict[tuple[Any, ...], bytes | None] = {}
        out: list[tuple[int, bytes]] = []
        for cid, c in list(self._clients.items()):
            if now_ms - c.last_frame_ms < self.interval_ms or self.seq <= c.basis:
                continue
            gk = (c.key, c.basis)
            if gk in shared:
                frame = shared[gk]
            else:
                idx = self._dirty(c, c.basis)
                frame = self._positions_frame(idx) if idx.shape[0] else None
                shared[gk] = frame
            if frame is None:
                continue
            if any(kind == "positions" for kind, _, _ in c.outbox):
                # Built from the same basis, this frame holds everything the waiting one did.
                c.outbox = deque(f for f in c.outbox if f[0] != "positions")
                self.stats.superseded += 1
            c.last_frame_ms = now_ms
            self._push(cid, c, "positions", self.seq, frame)
            self.stats.frames_positions += 1
            out.append((cid, frame))
        return out

    def next_due_ms(self) -> int | None:
        """The earliest time a client may get its next position frame, or None if no client."""
        if not self._clients:
            return None
        return min(c.last_frame_ms for c in self._clients.values()) + self.interval_ms

    def snapshot_items(self, visible: Array | None = None) -> list[dict[str, Any]]:
        """The latest item of every (visible) vehicle that has reported, as dicts."""
        self._sync()
        mask = self.has if visible is None else self.has & visible
        idx = np.flatnonzero(mask)
        self._encode(idx)
        return [orjson.loads(self._items[i]) for i in idx.tolist()]

    def alarm_items(self, visible: Array | None = None) -> list[dict[str, Any]]:
        """Open alarms, and closed ones not yet acknowledged, oldest first."""
        out = []
        for item in self._alarms.values():
            v = self.registry.by_id(item["vehicle"])
            if visible is None or (v is not None and visible[v]):
                out.append(item)
        return sorted(out, key=lambda a: (a["started_at"], a["id"]))

    def state_codes(self, now_ms: int) -> Array:
        """Current state code per vehicle (index into :data:`STATES`; offline if never seen)."""
        self._sync()
        return self._compute_states(now_ms)

    # -- internals --------------------------------------------------------------------------

    def _client(self, client: int) -> _Client:
        c = self._clients.get(client)
        if c is None:
            raise Misuse(f"client {client} is not connected")
        return c

    def _new_client(self, visible_org: str, sub: Subscription) -> _Client:
        key = (visible_org, tuple(sorted(sub.orgs)), tuple(sorted(sub.vehicles)), sub.bbox)
        cached = self._masks.get(key[:3])
        if cached is not None:
            mask, users = cached
            self._masks[key[:3]] = (mask, users + 1)
        else:
            reg = self.registry
            mask = reg.visible_mask(visible_org)
            if sub.orgs:
                org_mask = np.zeros(len(reg.orgs.ids), dtype=bool)
                for o in sub.orgs:
                    org_mask |= reg.orgs.subtree_mask(o)
                mask = mask & org_mask[reg.org_index]
            if sub.vehicles:
                vm = np.zeros(self._n, dtype=bool)
                vm[[i for i in (reg.by_id(v) for v in sub.vehicles) if i is not None]] = True
                mask = mask & vm
            self._masks[key[:3]] = (mask, 1)
        return _Client(visible=mask, sub=sub, key=key)

    def _unuse_mask(self, c: _Client) -> None:
        cached = self._masks.get(c.key[:3])
        if cached is None:
            return
        mask, users = cached
        if users <= 1:
            del self._masks[c.key[:3]]
        else:
            self._masks[c.key[:3]] = (mask, users - 1)

    def _in_bbox(self, idx: Array, bbox: BBox) -> Array:
        w, s, e, n = bbox
        lat, lon = self.lat[idx], self.lon[idx]
        return idx[(lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)]

    def _dirty(self, c: _Client, basis: int) -> Array:
        idx = np.flatnonzero(c.visible & self.has & (self.changed_seq > basis))
        if c.sub.bbox is not None:
            idx = self._in_bbox(idx, c.sub.bbox)
        return idx

    def _compute_states(self, now_ms: int) -> Array:
        return vehicle_states(
            self.ts, self.speed, self.acc, self.alarms_open, now_ms, self.vehicle_state, self.has
        )

    def _refresh_states(self, now_ms: int) -> None:
        st = self._compute_states(now_ms)
        changed = (st != self.state) & self.has
        if changed.any():
            self.seq += 1
            self.changed_seq[changed] = self.seq
        self.state = st

    def _encode(self, idx: Array) -> None:
        stale = idx[self._item_seq[idx] != self.changed_seq[idx]]
        if stale.shape[0] == 0:
            return
        reg = self.registry
        st = self._compute_states(self._now_ms)[stale].tolist()
        with np.errstate(over="ignore", invalid="ignore"):  # garbage in stays garbage, no crash
            lat = np.round(self.lat[stale], 6).tolist()
            lon = np.round(self.lon[stale], 6).tolist()
            speed = np.round(self.speed[stale].astype(np.float64), 1).tolist()
        for i, v in enumerate(stale.tolist()):
            self._items[v] = orjson.dumps(
                {
                    "vehicle": reg.ids[v],
                    "plate": reg.plates[v],
                    "org": self._org_ids[v],
                    "ts": int(self.ts[v]),
                    "lat": lat[i],
                    "lon": lon[i],
                    "speed": speed[i],
                    "heading": int(self.heading[v]),
                    "acc": bool(self.acc[v]),
                    "state": STATES[st[i]],
                }
            )
        self._item_seq[stale] = self.changed_seq[stale]
        self.stats.encodes += int(stale.shape[0])

    def _positions_frame(self, idx: Array) -> bytes:
        self._encode(idx)
        items = self._items
        self.stats.items_sent += int(idx.shape[0])
        return b"".join(
            (
                b'{"type":"positions","seq":',
                str(self.seq).encode(),
                b',"items":[',
                b",".join([items[i] for i in idx.tolist()]),
                b"]}",
            )
        )

    def _queue_snapshot(self, cid: int, c: _Client, now_ms: int, resume: str = "none") -> None:
        self._refresh_states(now_ms)
        idx = np.flatnonzero(c.visible & self.has)
        if c.sub.bbox is not None:
            idx = self._in_bbox(idx, c.sub.bbox)
        self._encode(idx)
        alarms = orjson.dumps(self.alarm_items(c.visible))
        head = orjson.dumps(
            {
                "type": "snapshot",
                "seq": self.seq,
                "node": self.node,
                "gid": self.last_gid,
                "resume": resume,
                "gap": resume == "gap",
            }
        )
        frame = b"".join(
            (
                head[:-1],
                b',"vehicles":[',
                b",".join([self._items[i] for i in idx.tolist()]),
                b'],"alarms":',
                alarms,
                b"}",
            )
        )
        self.stats.frames_snapshot += 1
        c.basis = self.seq  # a snapshot is never dropped: count it as delivered
        self._push(cid, c, "snapshot", self.seq, frame)

    def _alarm_item(self, e: AlarmEvent) -> dict[str, Any]:
        v = e.vehicle
        found = self._acks.get(e.id)
        if found is None:
            found = self._acks_done.get(e.id)
        record = list(found or ())
        return {
            "id": e.id,
            "vehicle": e.vehicle_id,
            "plate": self.registry.plates[v],
            "org": self._org_ids[v],
            "kind": e.kind,
            "state": e.state,
            "started_at": e.started_at,
            "ended_at": e.ended_at,
            "lat": e.lat,
            "lon": e.lon,
            "severity": e.severity,
            "detail": {**e.detail, "severity": e.severity, "covered": e.covered},
            "ack": record[0] if record else None,
            "acks": record,
        }

    def _hold(self, alarm_id: str, item: dict[str, Any]) -> None:
        """Keep an alarm on the desk; its handling record comes back from the done list."""
        self._alarms[alarm_id] = item
        if alarm_id not in self._acks:
            done = self._acks_done.pop(alarm_id, None)
            if done is not None:
                self._acks[alarm_id] = done

    def _release(self, alarm_id: str) -> None:
        """The alarm leaves the desk; its handling record joins the bounded done list."""
        self._alarms.pop(alarm_id, None)
        record = self._acks.pop(alarm_id, None)
        if record is not None:
            self._acks_done[alarm_id] = record
            self._acks_done.move_to_end(alarm_id)
            self._trim_acks_done()

    def _trim_acks_done(self) -> None:
        while len(self._acks_done) > self._closed_kept:
            self._acks_done.popitem(last=False)

    def _trim_closed(self) -> None:
        while len(self._closed) > self._closed_kept:
            old, _ = self._closed.popitem(last=False)
            self._release(old)

    def _take_gid(self, gid: str | None) -> tuple[int, int] | None:
        if gid is None:
            return None
        key = gid_key(gid)
        if self.last_gid is None or key > gid_key(self.last_gid):
            self.last_gid = gid
        return key

    @staticmethod
    def _alarm_frame(seq: int, gid: str | None, item: dict[str, Any]) -> bytes:
        if gid is None:
            return orjson.dumps({"type": "alarm", "seq": seq, "alarm": item})
        return orjson.dumps({"type": "alarm", "seq": seq, "gid": gid, "alarm": item})

    def _ring_add(self, entry: _RingEntry) -> None:
        ring = self._ring
        if ring.maxlen is not None and len(ring) >= ring.maxlen:
            old = ring[0].gid
            if old is not None and (self.gid_floor is None or old > gid_key(self.gid_floor)):
                self.gid_floor = f"{old[0]}-{old[1]}"
        ring.append(entry)

    def _publish_alarm(self, v: int, item: dict[str, Any], gid: str | None = None) -> list[int]:
        key = self._take_gid(gid)
        self.seq += 1
        frame = self._alarm_frame(self.seq, gid, item)
        self._ring_add(_RingEntry(self.seq, v, frame, key))
        woke = []
        for cid, c in list(self._clients.items()):
            if c.visible[v]:
                self._push(cid, c, "alarm", self.seq, frame)
                self.stats.frames_alarm += 1
                woke.append(cid)
        if woke and self.on_ready is not None:
            self.on_ready()
        return woke

    def _push(self, cid: int, c: _Client, kind: str, seq: int, frame: bytes) -> None:
        c.outbox.append((kind, seq, frame))
        self._ready.add(cid)
        if len(c.outbox) > self.client_buffer + c.replay_allowance and not c.overflow:
            c.overflow = True
            self.stats.slow_disconnects += 1
            self._closing.append(cid)
            self.disconnect(cid)


def parse_client_message(raw: str | bytes) -> dict[str, Any]:
    """Decode one client text frame into a dict. Raises :class:`BadRecord`."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord("invalid_json", str(exc)) from None
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise BadRecord("bad_message", 'expected an object with "op"')
    return msg
