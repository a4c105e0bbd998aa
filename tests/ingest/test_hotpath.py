"""The ingest hot path made fast for the end-to-end benchmark agrees with its references.

- :func:`ingest.json_codec.decode_objects` (column by column) against
  :func:`ingest.json_codec.decode_json_payload` (object by object), on random objects.
- :class:`ingest.mqtt_wire.MqttWire` (the MQTT packet reader) against packets built
  independently, split at every possible byte boundary.

(These belong in tests/ingest/; they live here because this helper owns only
tests/simulator/test_bench*.py.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.batch import FIELDS, BatchBuilder
from ingest.json_codec import JsonLimits, decode_json_payload, decode_objects
from ingest.mqtt_wire import MqttWire
from simulator.bench_pub import encode_publish

NOW = 1_764_034_200_000
LIMITS = JsonLimits(max_future_ms=600_000, max_past_ms=30 * 86_400_000)

_number = st.one_of(
    st.integers(-1000, 10_000),
    st.floats(-1000, 10_000),
    st.floats(allow_nan=False),
    st.sampled_from([0, 90, 90.0, 360, -500, 9000, 400, 400.0001, -90.0, 180]),
)
_value = st.one_of(
    _number,
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.just([1]),
    st.integers(-(2**63), 2**64 - 1),
)
_ts = st.one_of(
    st.integers(NOW - 40 * 86_400_000, NOW + 900_000),
    st.floats(NOW - 1e6, NOW + 1e6),
    st.just("2025-11-25T09:30:00+08:00"),
    st.just("2025-11-25T09:30:00"),
    st.just("yesterday"),
    st.booleans(),
    st.none(),
    st.integers(2**63, 2**64 - 1),
)
_KEYS = ["lat", "lon", "speed", "heading", "alt", "acc", "alarm", "status", "mileage"]


@st.composite
def _objects(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 15)) == 0:
        return draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=2), st.just([])))
    obj: dict[str, Any] = {}
    if draw(st.integers(0, 10)):
        obj["ts"] = draw(_ts)
    for key in _KEYS:
        choice = draw(st.integers(0, 5))
        if choice == 0:
            continue  # absent
        if choice == 1:
            obj[key] = draw(_value)
        elif key == "acc":
            obj[key] = draw(st.booleans())
        elif key in ("alarm", "status"):
            obj[key] = draw(st.integers(0, 2**32 - 1))
        elif key == "lat":
            obj[key] = draw(st.floats(-90, 90))
        elif key == "lon":
            obj[key] = draw(st.floats(-180, 180))
        else:
            obj[key] = draw(_number)
    return obj


def _reference(objs: list[Any], vehicle: np.ndarray, recv: np.ndarray) -> tuple[Any, list[Any]]:
    out = BatchBuilder()
    errors = []
    for i, obj in enumerate(objs):
        errs = decode_json_payload(
            orjson.dumps([obj]),  # one item, whatever it is (the core unpacks arrays)
            terminal="t",
            vehicle=int(vehicle[i]),
            recv_ts=int(recv[i]),
            limits=LIMITS,
            out=out,
        )
        errors += [(i, e.reason, e.detail.removeprefix("item 0: ")) for e in errs]
    return out.build(), errors


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


@settings(max_examples=300, deadline=None)
@given(st.lists(_objects(), max_size=30), st.integers(0, 10**6))
def test_column_decoder_agrees_with_the_reference(objs: list[Any], seed: int) -> None:
    # Round-trip through JSON so the objects are what orjson hands the core.
    objs = [orjson.loads(orjson.dumps(o)) for o in objs]
    rng = np.random.default_rng(seed)
    vehicle = rng.integers(0, 50, len(objs)).astype(np.int32)
    recv = (NOW + rng.integers(-1000, 1000, len(objs))).astype(np.int64)
    want, want_errors = _reference(objs, vehicle, recv)
    got, got_errors = decode_objects(objs, vehicle, recv, LIMITS)
    got.check()
    assert [(i, e.reason, e.detail) for i, e in got_errors] == want_errors
    assert len(got) == len(want)
    for name in FIELDS:
        assert _same(getattr(got, name), getattr(want, name)), name


def test_column_decoder_empty_and_non_finite() -> None:
    batch, errors = decode_objects([], np.empty(0, np.int32), np.empty(0, np.int64), LIMITS)
    assert len(batch) == 0 and errors == []
    objs = [
        {"ts": NOW, "lat": 30.0, "lon": 106.0, "speed": math.inf},
        {"ts": NOW, "lat": 30.0, "lon": 106.0, "mileage": math.nan},
        {"ts": NOW, "lat": 30.0, "lon": 106.0, "heading": 359.9, "alt": -3.7},
    ]
    batch, errors = decode_objects(objs, np.zeros(3, np.int32), np.full(3, NOW), LIMITS)
    assert [(i, e.reason) for i, e in errors] == [(0, "not_finite"), (1, "not_finite")]
    assert batch.heading.tolist() == [359] and batch.alt.tolist() == [-3]


# -- the MQTT packet reader --------------------------------------------------------------------


def _publish_v5(topic: str, payload: bytes, qos: int, mid: int, props: bytes) -> bytes:
    tb = topic.encode()
    body = len(tb).to_bytes(2, "big") + tb
    if qos:
        body += mid.to_bytes(2, "big")
    body += bytes([len(props)]) + props + payload
    n, rem = len(body), bytearray()
    while True:
        n, d = divmod(n, 128)
        rem.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1]) + bytes(rem) + body


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
            st.binary(max_size=300),
            st.integers(0, 1),
            st.integers(1, 65535),
        ),
        max_size=8,
    ),
    st.booleans(),
    st.data(),
)
def test_wire_reads_publishes_at_any_split(
    msgs: list[tuple[str, bytes, int, int]], v5: bool, data: st.DataObject
) -> None:
    stream = b""
    for topic, payload, qos, mid in msgs:
        if v5:
            stream += _publish_v5(topic, payload, qos, mid, b"\x01\x01")  # payload format
        elif qos:
            pkt = encode_publish(topic, mid.to_bytes(2, "big") + payload)
            stream += bytes([pkt[0] | 2]) + pkt[1:]
        else:
            stream += encode_publish(topic, payload)
        stream += b"\xd0\x00"  # a PINGRESP between publishes
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    got: list[tuple[str, bytes, int, int]] = []
    wire = MqttWire(v5=v5)
    others = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        others += wire.feed(stream[prev:cut], lambda t, p, q, m: got.append((t, p, q, m)))
        prev = cut
    want = [(t, p, q, m if q else 0) for t, p, q, m in msgs]
    assert got == want
    assert [o[0] for o in others] == [13] * len(msgs)
