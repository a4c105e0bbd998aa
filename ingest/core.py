"""The sans-I/O ingest core: messages in, :class:`Flush` out.

Feed it MQTT messages (topic, payload, receive time, an opaque ack token) with
:meth:`IngestCore.add`; ask :meth:`IngestCore.due` whether a flush is due by
size or age; call :meth:`IngestCore.flush` to get the columnar batch, the dead
letters and the ack tokens of every message it covers. The MQTT adapter acks
those tokens only after the flush has been durably written.

JSON payloads are parsed as they arrive (orjson) and checked together at
flush time, column by column (:func:`~ingest.json_codec.decode_objects`);
JT/T 808 payloads are kept raw and decoded together at flush time, where the
batch decoder can vectorize across frames. What a topic means (format,
terminal, registry index) is worked out once per topic and remembered.

Both codecs' positions pass the one position check (:mod:`ingest.validate`:
ranges, and the time window around the receive time); a JT/T 808 frame must
also name, in its header, the terminal its topic names. Whatever fails is a
dead letter with its reason, and so is a message that yields nothing at all
(an empty payload or array): every input leaves a row or a trace.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from fleet.batch import FIELDS, BatchBuilder, PositionBatch
from fleet.deadletter import DeadLetter
from fleet.errors import BadRecord
from fleet.registry import Registry
from ingest.json_codec import JsonLimits, decode_objects
from ingest.validate import check_columns

__all__ = ["Flush", "IngestCore", "topic_kind"]


@dataclass(frozen=True, slots=True)
class Flush:
    """What one flush hands to the next stage."""

    batch: PositionBatch
    dead_letters: list[DeadLetter]
    acks: list[Hashable]
    messages: int  # MQTT messages covered
    first_recv_ms: int  # receive time of the oldest message in it
    others: list[tuple[str, Any]] = field(default_factory=list)  # (phone, JT/T 808 non-position)


def topic_kind(topic: str) -> tuple[str, str] | None:
    """(``"json"`` | ``"jt808"``, terminal) for a known topic, else None.

    ``fleet/{terminal}/position`` and ``jt808/{phone}/up``; an optional shard
    prefix (``s3/fleet/...``) is allowed for sharded deployments.
    """
    parts = topic.split("/")
    if len(parts) >= 3 and parts[-1] == "position" and parts[-3] == "fleet" and parts[-2]:
        return "json", parts[-2]
    if len(parts) >= 3 and parts[-1] == "up" and parts[-3] == "jt808" and parts[-2]:
        return "jt808", parts[-2]
    return None


Jt808Decoder = Callable[[list[bytes]], Any]

_TOPIC_CACHE_MAX = 200_000  # distinct topics remembered; past that the memo starts again


# Where a parsed JSON object came from, for its dead letter should it be bad:
# (topic, terminal, payload, recv_ms, vehicle, item number or -1 for a single object).
_Source = tuple[str, str, bytes, int, int, int]
_UNSEEN = ("", "", None)


class IngestCore:
    """Accumulates decoded positions between flushes. Not thread-safe; one per worker."""

    def __init__(
        self,
        registry: Registry,
        *,
        limits: JsonLimits,
        max_rows: int,
        max_age_ms: int,
        jt808_decoder: Jt808Decoder | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.max_rows = max_rows
        self.max_age_ms = max_age_ms
        self._jt808_decoder = jt808_decoder
        self._builder = BatchBuilder()
        # JSON objects parsed since the last flush, with their source, vehicle and item number.
        self._objs: list[Any] = []
        self._obj_src: list[_Source] = []
        self._topics: dict[str, tuple[str, str, int | None] | None] = {}
        self._reg_version = registry.version  # the topic memo holds registry indices
        self._dead: list[DeadLetter] = []
        self._acks: list[Hashable] = []
        self._raw808: list[tuple[bytes, str, int, str]] = []  # payload, phone, recv_ms, topic
        self._first_recv: int | None = None
        self._messages = 0
        self.rejected: Counter[str] = Counter()  # by reason, since start
        self._received = {"json": 0, "jt808": 0, "unknown": 0}

    @property
    def received(self) -> dict[str, int]:
        """Messages taken since start, by format: ``json``, ``jt808``, ``unknown`` (topic)."""
        return dict(self._received)

    def __len__(self) -> int:
        """Positions (and raw JT/T 808 payloads) waiting for the next flush."""
        return len(self._builder) + len(self._objs) + len(self._raw808)

    @property
    def pending(self) -> bool:
        """True when anything (positions, dead letters or acks) waits for a flush."""
        return self._first_recv is not None

    def add(self, topic: str, payload: bytes, recv_ms: int, ack: Hashable | None = None) -> None:
        """Take one MQTT message. Bad input is recorded, never raised."""
        if ack is not None:
            self._acks.append(ack)
        if self._first_recv is None:
            self._first_recv = recv_ms
        self._messages += 1
        if self._reg_version != self.registry.version:
            # A vehicle registered, changed or retired live (records issue): a terminal
            # unknown a moment ago may be known now, or carried by another vehicle.
            self._topics.clear()
            self._reg_version = self.registry.version
        kind = self._topics.get(topic, _UNSEEN)
        if kind is _UNSEEN:
            kind = self._learn_topic(topic)
        if kind is None:
            self._received["unknown"] += 1
            self._reject(
                DeadLetter(
                    recv_ms,
                    topic,
                    None,
                    "unknown_topic",
                    "not fleet/{terminal}/position or jt808/{phone}/up",
                    payload,
                )
            )
            return
        fmt, terminal, vehicle = kind
        self._received[fmt] += 1
        if len(payload) > self.limits.max_payload_bytes:
            detail = f"{len(payload)} bytes"
            if fmt == "json":
                detail += f" > {self.limits.max_payload_bytes}"
            self._reject(DeadLetter(recv_ms, topic, terminal, "oversized", detail, payload))
            return
        if fmt == "jt808":
            if not payload:
                self._reject(
                    DeadLetter(recv_ms, topic, terminal, "empty_payload", "no bytes", payload)
                )
                return
            self._raw808.append((payload, terminal, recv_ms, topic))
            return
        if vehicle is None:
            self._reject(
                DeadLetter(
                    recv_ms,
                    topic,
                    terminal,
                    "unknown_terminal",
                    f"terminal {terminal[:32]!r} is not registered",
                    payload,
                )
            )
            return
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            self._reject(
                DeadLetter(recv_ms, topic, terminal, "invalid_json", str(exc)[:200], payload)
            )
            return
        if type(doc) is not list:
            self._objs.append(doc)
            self._obj_src.append((topic, terminal, payload, recv_ms, vehicle, -1))
            return
        if not doc:  # acknowledged, so it must leave a trace: nothing else would
            self._reject(
                DeadLetter(recv_ms, topic, terminal, "empty_payload", "an empty array", payload)
            )
            return
        if len(doc) > self.limits.max_positions:
            detail = f"{len(doc)} > {self.limits.max_positions}"
            self._reject(
                DeadLetter(recv_ms, topic, terminal, "too_many_positions", detail, payload)
            )
            return
        self._objs += doc
        self._obj_src += [(topic, terminal, payload, recv_ms, vehicle, i) for i in range(len(doc))]

    def _learn_topic(self, topic: str) -> tuple[str, str, int | None] | None:
        if len(self._topics) >= _TOPIC_CACHE_MAX:
            self._topics.clear()
        kind = topic_kind(topic)
        known = None if kind is None else (kind[0], kind[1], self.registry.by_terminal(kind[1]))
        self._topics[topic] = known
        return known

    def _decode_json(self) -> None:
        objs, srcs = self._objs, self._obj_src
        self._objs, self._obj_src = [], []
        n = len(srcs)
        vehicle = np.fromiter((s[4] for s in srcs), dtype=np.int32, count=n)
        recv = np.fromiter((s[3] for s in srcs), dtype=np.int64, count=n)
        batch, errors = decode_objects(objs, vehicle, recv, self.limits)
        self._builder.extend(batch)
        for i, err in errors:
            topic, terminal, payload, recv_ms, _, item = srcs[i]
            detail = f"item {item}: {err.detail}" if item >= 0 else err.detail
            self._reject(DeadLetter(recv_ms, topic, terminal, err.reason, detail, payload))

    def _reject(self, dl: DeadLetter) -> None:
        self.rejected[dl.reason] += 1
        self._dead.append(dl)

    def due(self, now_ms: int) -> bool:
        """True when the pending rows reach ``max_rows`` or the oldest is ``max_age_ms`` old."""
        if self._first_recv is None:
            return False
        return len(self) >= self.max_rows or now_ms - self._first_recv >= self.max_age_ms

    def flush(self) -> Flush:
        """Everything pending as one :class:`Flush`; the core starts empty again."""
        others: list[tuple[str, Any]] = []
        if self._objs:
            self._decode_json()
        if self._raw808:
            others = self._decode_jt808()
        out = Flush(
            batch=self._builder.build(),
            dead_letters=self._dead,
            acks=self._acks,
            messages=self._messages,
            first_recv_ms=self._first_recv or 0,
            others=others,
        )
        self._dead, self._acks, self._first_recv, self._messages = [], [], None, 0
        return out

    def _decode_jt808(self) -> list[tuple[str, Any]]:
        raw, self._raw808 = self._raw808, []
        if self._jt808_decoder is None:
            for payload, phone, recv_ms, topic in raw:
                self._reject(
                    DeadLetter(
                        recv_ms,
                        topic,
                        phone,
                        "jt808_disabled",
                        "no JT/T 808 decoder configured",
                        payload,
                    )
                )
            return []
        decoded = self._jt808_decoder([p for p, _, _, _ in raw])
        for src, err, frame in decoded.errors:
            _, phone, recv_ms, topic = raw[src]
            reason = err.reason if isinstance(err, BadRecord) else "frame_error"
            detail = err.detail if isinstance(err, BadRecord) else str(err)
            self._reject(DeadLetter(recv_ms, topic, phone, reason, detail, frame))
        cols = decoded.columns
        n = len(cols["ts"])
        produced = np.zeros(len(raw), dtype=bool)  # payloads that gave a row, error or message
        produced[[src for src, _, _ in decoded.errors]] = True
        produced[[src for src, _ in decoded.others]] = True
        if n:
            source = np.asarray(cols["source"], dtype=np.int64)
            produced[source] = True
            keep = self._check_jt808_rows(raw, decoded, source)
            columns = {name: np.asarray(cols[name])[keep] for name in FIELDS if name in cols}
            columns["vehicle"] = self._jt808_vehicles(raw)[source[keep]]
            columns["recv_ts"] = np.array([r[2] for r in raw], dtype=np.int64)[source[keep]]
            self._builder.extend(PositionBatch.from_columns(**columns))
        for i in np.flatnonzero(~produced).tolist():
            payload, phone, recv_ms, topic = raw[i]
            self._reject(
                DeadLetter(
                    recv_ms, topic, phone, "no_frame", "no JT/T 808 frame in the payload", payload
                )
            )
        return [(raw[src][1], msg) for src, msg in decoded.others]

    def _jt808_vehicles(self, raw: list[tuple[bytes, str, int, str]]) -> Any:
        """Registry index of each payload's topic terminal, -1 when unknown."""
        return np.array([self._vehicle_or_minus1(r[1]) for r in raw], dtype=np.int32)

    def _check_jt808_rows(
        self, raw: list[tuple[bytes, str, int, str]], decoded: Any, source: Any
    ) -> Any:
        """Indices of the decoded rows to keep; every other row becomes a dead letter.

        A row is kept when its topic names a registered terminal, the frame's header
        names the same terminal (a frame of another terminal is never stored under
        this topic's vehicle), and its values pass the checks every codec's positions
        pass (:func:`~ingest.validate.check_columns`).
        """
        cols = decoded.columns
        vehicle = self._jt808_vehicles(raw)[source]
        # Phones compared without leading zeros (2013: 12 BCD digits, 2019: 20), as codes.
        code: dict[str, int] = {}
        header = np.array([code.setdefault(p.lstrip("0"), len(code)) for p in decoded.phones])
        topic = np.array([code.setdefault(r[1].lstrip("0"), len(code)) for r in raw])
        phone_code = np.asarray(cols["phone"], dtype=np.intp)
        recv = np.array([r[2] for r in raw], dtype=np.int64)[source]
        ok, errors = check_columns(cols, recv, self.limits)
        # The first reason that applies wins: unknown terminal, then phone, then the values.
        reasons: dict[int, tuple[str, str]] = {i: (e.reason, e.detail) for i, e in errors}
        if len(header):
            for i in np.flatnonzero(header[phone_code] != topic[source]).tolist():
                got = decoded.phones[int(phone_code[i])]
                reasons[i] = ("phone_mismatch", f"frame header phone {got!r} is not the topic's")
        for i in np.flatnonzero(vehicle < 0).tolist():
            phone = raw[int(source[i])][1]
            reasons[i] = ("unknown_terminal", f"terminal {phone[:32]!r} is not registered")
        # As for JSON: one dead letter per bad position (a payload of an unknown terminal: one).
        told: set[int] = set()
        for i in sorted(reasons):
            reason, detail = reasons[i]
            src = int(source[i])
            payload, phone, recv_ms, topic_name = raw[src]
            if reason == "unknown_terminal":
                if src in told:
                    continue
                told.add(src)
            else:
                k = i - int(np.searchsorted(source, src))  # position number inside the payload
                detail = f"position {k}: {detail}"
            self._reject(DeadLetter(recv_ms, topic_name, phone, reason, detail, payload))
        ok[list(reasons)] = False
        return np.flatnonzero(ok)

    def _vehicle_or_minus1(self, terminal: str) -> int:
        v = self.registry.by_terminal(terminal)
        return -1 if v is None else v
