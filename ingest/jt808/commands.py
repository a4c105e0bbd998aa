"""Commands to terminals: their life as a transition table, their wire form, their timing.

Pure (no I/O, no clock). The web API makes a command, the store keeps it, the
gateway node holding the terminal's connection carries it out; all three move it
with :func:`advance` over one table, so a state is only ever reached one way::

    awaiting_confirmation ──confirm──▶ queued ──send──▶ sent ──ack──▶ acked
            │                           │  ▲             │ ├─nack──▶ failed
            └──────expire──▶ expired ◀──┘  └────lost─────┘ └─no_reply──▶ timeout
                                        └──refuse──▶ failed

``awaiting_confirmation`` is for the commands a second operator must confirm
(cutting oil or power). ``lost``: the connection dropped while the command was
out, so it waits for the terminal again (and is sent again, within its expiry).

The wire form (MQTT ``{prefix}/{phone}/down``, JSON) is :func:`to_wire`;
results travel back on ``{prefix}/{phone}/cmd-result`` as :func:`result_json`.

Timing (JT/T 808-2019 §7.5.1 and table 12, parameters 0x0002 and 0x0003): the
reply is awaited ``T`` seconds, and after the n-th retransmission
``T(n+1) = T(n) × (n+1)``; after ``N`` retransmissions without a reply the
command has timed out (:func:`reply_timeouts`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.errors import BadRecord, Misuse
from ingest.jt808.downlink import (
    MSG_LOCATE,
    MSG_LOCATE_REPLY,
    MSG_PARAMS_QUERY,
    MSG_PARAMS_QUERY_ALL,
    MSG_PARAMS_REPLY,
    AlarmConfirm,
    Downlink,
    LocateQuery,
    ParamsQuery,
    ParamsSet,
    ParamValue,
    TemporaryTracking,
    TerminalControl,
    TextMessage,
)

__all__ = [
    "FINAL",
    "KINDS",
    "STATES",
    "TRANSITIONS",
    "Command",
    "CommandState",
    "InvalidTransition",
    "OfflineQueue",
    "advance",
    "answers",
    "expected_reply",
    "from_wire",
    "reply_timeouts",
    "result_json",
    "to_wire",
    "transition_to",
]

CommandState = Literal[
    "awaiting_confirmation", "queued", "sent", "acked", "failed", "timeout", "expired"
]
STATES: tuple[CommandState, ...] = (
    "awaiting_confirmation",
    "queued",
    "sent",
    "acked",
    "failed",
    "timeout",
    "expired",
)
FINAL: frozenset[str] = frozenset({"acked", "failed", "timeout", "expired"})
KINDS = ("text", "confirm_alarm", "locate", "track", "params_set", "params_get", "control")

# (state, event) → next state. Nothing else is allowed.
TRANSITIONS: Mapping[tuple[str, str], CommandState] = {
    ("awaiting_confirmation", "confirm"): "queued",
    ("awaiting_confirmation", "expire"): "expired",
    ("queued", "send"): "sent",
    ("queued", "expire"): "expired",
    ("queued", "refuse"): "failed",  # the gateway cannot build it (a bad wire form)
    ("sent", "send"): "sent",  # a retransmission
    ("sent", "ack"): "acked",
    ("sent", "nack"): "failed",  # 0x0001 result 1 failed, 2 bad message, 3 unsupported
    ("sent", "no_reply"): "timeout",
    ("sent", "lost"): "queued",
}

# The event that reaches a state, for applying a reported state (the store).
_EVENT_TO: Mapping[str, str] = {
    "queued": "lost",
    "sent": "send",
    "acked": "ack",
    "failed": "nack",
    "timeout": "no_reply",
    "expired": "expire",
}


class InvalidTransition(Misuse):
    """``event`` is not allowed in ``state`` (see :data:`TRANSITIONS`)."""

    def __init__(self, state: str, event: str) -> None:
        self.state = state
        self.event = event
        super().__init__(f"a command in state {state!r} cannot take {event!r}")


def advance(state: str, event: str) -> CommandState:
    """The next state, or :class:`InvalidTransition`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def transition_to(state: str, reported: str) -> CommandState | None:
    """The state a report of ``reported`` moves a command in ``state`` to, or None when
    it must be ignored (a late or repeated report: final states never change).

    A report may skip ``sent`` (its message was lost on the way): queued → acked,
    failed or timeout is taken as send then the reply.
    """
    if state in FINAL or (reported == state and reported != "sent"):
        return None
    event = _EVENT_TO.get(reported)
    if event is None:
        return None
    nxt = TRANSITIONS.get((state, event))
    if nxt is not None:
        return nxt
    if state == "queued" and reported in ("acked", "failed", "timeout"):
        return TRANSITIONS[("sent", event)]
    return None  # e.g. awaiting_confirmation is never sent without its second operator


def reply_timeouts(timeout_s: float, retransmissions: int) -> list[float]:
    """How long each transmission waits for its reply: ``T, T×2, T×2×3, ...``
    (JT/T 808-2019 §7.5.1: ``T(n+1) = T(n) × (n+1)``), ``retransmissions + 1`` of them."""
    if timeout_s <= 0 or retransmissions < 0:
        raise Misuse("timeout must be positive and retransmissions at least 0")
    out = [timeout_s]
    for n in range(1, retransmissions + 1):
        out.append(out[-1] * (n + 1))
    return out


def expected_reply(msg: Downlink) -> int:
    """The message id that answers ``msg``: 0x0201 to a locate, 0x0104 to a parameter
    query, the general reply 0x0001 to everything else."""
    if isinstance(msg, LocateQuery):
        return MSG_LOCATE_REPLY
    if isinstance(msg, ParamsQuery):
        return MSG_PARAMS_REPLY
    return 0x0001


def answers(msg_id: int) -> frozenset[int]:
    """The downlink ids a specific reply ``msg_id`` answers."""
    if msg_id == MSG_LOCATE_REPLY:
        return frozenset({MSG_LOCATE})
    if msg_id == MSG_PARAMS_REPLY:
        return frozenset({MSG_PARAMS_QUERY, MSG_PARAMS_QUERY_ALL})
    return frozenset()


# --- wire form ---------------------------------------------------------------------------------


def _params_wire(params: tuple[tuple[int, ParamValue], ...]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for pid, value in params:
        if isinstance(value, bytes):
            out.append([pid, {"hex": value.hex()}])
        else:
            out.append([pid, value])
    return out


def to_wire(kind: str, msg: Downlink) -> dict[str, Any]:
    """The JSON-able form of a command's message (what the gateway rebuilds it from)."""
    body: dict[str, Any]
    if isinstance(msg, TextMessage):
        body = {"text": msg.text, "flags": msg.flags, "text_type": msg.text_type}
    elif isinstance(msg, AlarmConfirm):
        body = {"alarm_types": msg.alarm_types, "alarm_serial": msg.alarm_serial}
    elif isinstance(msg, LocateQuery):
        body = {}
    elif isinstance(msg, TemporaryTracking):
        body = {"interval_s": msg.interval_s, "validity_s": msg.validity_s}
    elif isinstance(msg, ParamsSet):
        body = {"params": _params_wire(msg.params)}
    elif isinstance(msg, ParamsQuery):
        body = {"ids": list(msg.ids)}
    elif isinstance(msg, TerminalControl):
        body = {"command": msg.command, "parameters": msg.parameters}
    else:
        raise Misuse(f"not a downlink message: {type(msg).__name__}")
    return {"kind": kind, **body}


def _int(d: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRecord("command", f"{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def from_wire(d: Mapping[str, Any]) -> Downlink:
    """:func:`to_wire`'s inverse; :class:`BadRecord` for a form that does not fit."""
    kind = d.get("kind")
    if kind == "text":
        text = d.get("text")
        if not isinstance(text, str) or not text:
            raise BadRecord("command", "text needs a non-empty text")
        return TextMessage(text, _int(d, "flags", 0, 255), _int(d, "text_type", 1, 2, 1))
    if kind == "confirm_alarm":
        return AlarmConfirm(
            _int(d, "alarm_types", 0, 0xFFFFFFFF), _int(d, "alarm_serial", 0, 0xFFFF, 0)
        )
    if kind == "locate":
        return LocateQuery()
    if kind == "track":
        return TemporaryTracking(
            _int(d, "interval_s", 0, 0xFFFF), _int(d, "validity_s", 0, 0xFFFFFFFF)
        )
    if kind == "params_set":
        raw = d.get("params")
        if not isinstance(raw, list) or not raw:
            raise BadRecord("command", "params_set needs params: [[id, value], ...]")
        params: list[tuple[int, ParamValue]] = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], int):
                raise BadRecord("command", f"a parameter is [id, value], got {item!r}")
            value = item[1]
            if isinstance(value, dict) and isinstance(value.get("hex"), str):
                value = bytes.fromhex(value["hex"])
            if not isinstance(value, int | str | bytes) or isinstance(value, bool):
                raise BadRecord("command", f"parameter 0x{item[0]:04X}: bad value {value!r}")
            params.append((item[0], value))
        return ParamsSet(tuple(params))
    if kind == "params_get":
        ids = d.get("ids", [])
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and 0 <= i <= 0xFFFFFFFF for i in ids
        ):
            raise BadRecord("command", "params_get ids must be a list of parameter ids")
        return ParamsQuery(tuple(ids))
    if kind == "control":
        params_text = d.get("parameters", "")
        if not isinstance(params_text, str):
            raise BadRecord("command", "control parameters must be a string")
        return TerminalControl(_int(d, "command", 0, 255), params_text)
    raise BadRecord("command", f"unknown command kind {kind!r}; one of {', '.join(KINDS)}")


def result_json(
    command_id: str,
    phone: str,
    state: str,
    at_ms: int,
    *,
    node: str,
    attempts: int = 0,
    result: int | None = None,
    reply: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """What the gateway publishes on ``{prefix}/{phone}/cmd-result``."""
    return {
        "id": command_id,
        "phone": phone,
        "state": state,
        "at": at_ms,
        "node": node,
        "attempts": attempts,
        "result": result,
        "reply": reply,
        "reason": reason,
    }


# --- the gateway's side ------------------------------------------------------------------------


@dataclass(slots=True)
class Command:
    """One command on a gateway node. ``expires_at`` is on the session's clock (seconds)."""

    id: str
    kind: str
    message: Downlink
    expires_at: float
    state: CommandState = "queued"
    attempts: int = 0
    serial: int | None = None
    msg_id: int = 0  # the downlink message id, once built
    frame: bytes = b""  # as sent: a retransmission sends the same bytes (same serial)
    reply_due: float = 0.0
    history: list[tuple[str, float]] = field(default_factory=list)

    def move(self, event: str, now: float) -> CommandState:
        self.state = advance(self.state, event)
        self.history.append((self.state, now))
        return self.state


class OfflineQueue:
    """Commands waiting for terminals not connected to this node: per terminal in arrival
    order, at most ``per_terminal`` each and ``total`` in all, dropped at their expiry.

    :meth:`add` returns the commands refused or pushed out (the oldest of that terminal
    goes first), which the caller reports ``failed``; :meth:`expire` the expired ones.
    """

    def __init__(self, per_terminal: int, total: int) -> None:
        if per_terminal < 1 or total < 1:
            raise Misuse("queue bounds must be at least 1")
        self.per_terminal = per_terminal
        self.total = total
        self._by_phone: dict[str, OrderedDict[str, Command]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, phone: str, cmd: Command) -> list[Command]:
        q = self._by_phone.setdefault(phone, OrderedDict())
        if cmd.id in q:
            return []  # a redelivery of the same command
        q[cmd.id] = cmd
        self._count += 1
        out: list[Command] = []
        while len(q) > self.per_terminal:
            out.append(q.popitem(last=False)[1])
            self._count -= 1
        while self._count > self.total:
            out.append(self._pop_oldest())
        return out

    def _pop_oldest(self) -> Command:
        phone, q = min(
            ((p, q) for p, q in self._by_phone.items() if q),
            key=lambda pq: next(iter(pq[1].values())).expires_at,
        )
        cmd = q.popitem(last=False)[1]
        self._count -= 1
        if not q:
            del self._by_phone[phone]
        return cmd

    def take(self, phone: str) -> list[Command]:
        """Everything waiting for ``phone``, in arrival order (it connected here)."""
        q = self._by_phone.pop(phone, None)
        if not q:
            return []
        self._count -= len(q)
        return list(q.values())

    def discard(self, command_id: str) -> bool:
        """Drop a command another node has taken care of."""
        for phone, q in self._by_phone.items():
            if q.pop(command_id, None) is not None:
                self._count -= 1
                if not q:
                    del self._by_phone[phone]
                return True
        return False

    def expire(self, now: float) -> Iterator[tuple[str, Command]]:
        """(phone, command) of each command whose expiry passed; they are removed."""
        for phone in list(self._by_phone):
            q = self._by_phone[phone]
            for cid in [c.id for c in q.values() if c.expires_at <= now]:
                cmd = q.pop(cid)
                self._count -= 1
                yield phone, cmd
            if not q:
                del self._by_phone[phone]
