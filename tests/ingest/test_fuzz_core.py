"""Bounded fuzz of both decoders through the ingest core (issue 12: "Done when").

Random and mutated JT/T 808 frames and JSON payloads never raise out of the core,
and every input is accounted for: each position is either a batch row that passes
the one position check (ingest/validate.py) or a dead letter, counted, with its
reason; a message that yields neither is a dead letter too.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.registry import Registry
from fleetwatch.config import parse_config
from ingest.core import Flush, IngestCore
from ingest.json_codec import JsonLimits
from ingest.jt808.codec import encode_location, encode_location_batch
from ingest.jt808.messages import Location
from ingest.jt808.position import decode_position_payloads, decode_position_payloads_scalar
from ingest.validate import check_position

NOW = 1_764_034_200_000
TERMINALS = ["13900000000", "13900000001"]
LIMITS = JsonLimits(max_payload_bytes=4096, max_positions=8)
# Reasons given per position (the others are per payload or per frame).
ROW_REASONS = {"future_ts", "stale_ts", "out_of_range", "phone_mismatch"}

pytestmark = pytest.mark.timeout(60)
FAST = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


def registry() -> Registry:
    cfg = parse_config(
        {
            "orgs": [{"id": "c", "name": "City"}],
            "vehicles": [
                {"id": f"v{i}", "plate": f"川X{i:05d}", "terminal": t, "org": "c"}
                for i, t in enumerate(TERMINALS)
            ],
        }
    )
    return Registry.from_config(cfg)


REGISTRY = registry()


def core() -> IngestCore:
    return IngestCore(
        REGISTRY,
        limits=LIMITS,
        max_rows=10_000,
        max_age_ms=50,
        jt808_decoder=lambda payloads: decode_position_payloads(payloads),
    )


def take(topic: str, payload: bytes) -> tuple[Flush, IngestCore]:
    c = core()
    c.add(topic, payload, NOW, ack=1)
    return c.flush(), c


def check_accounting(f: Flush, c: IngestCore) -> None:
    assert f.acks == [1]  # acknowledged once written, whatever it was
    assert sum(c.rejected.values()) == len(f.dead_letters)
    for dl in f.dead_letters:
        assert dl.reason and dl.reason.isidentifier() and isinstance(dl.detail, str)
    assert len(f.batch) + len(f.dead_letters) + len(f.others) >= 1
    b = f.batch
    for i in range(len(b)):
        err = check_position(
            ts=int(b.ts[i]),
            lat=float(b.lat[i]),
            lon=float(b.lon[i]),
            speed=float(b.speed[i]),
            heading=float(b.heading[i]),
            alt=float(b.alt[i]),
            mileage=float(b.mileage[i]),
            recv_ts=int(b.recv_ts[i]),
            window=LIMITS,
        )
        assert err is None, err


# -- JT/T 808 ---------------------------------------------------------------------------------

location = st.builds(
    Location,
    lat=st.integers(-95_000_000, 95_000_000).map(lambda x: x / 1e6),
    lon=st.integers(-185_000_000, 185_000_000).map(lambda x: x / 1e6),
    time_ms=st.one_of(
        st.integers(NOW - 3_600_000, NOW + 1_200_000),
        st.integers(946_684_800, 4_102_415_999).map(lambda s: s * 1000),  # 2000..2099 (GMT+8)
    ),
    speed_kmh=st.integers(0, 65535).map(lambda x: x / 10),
    heading=st.integers(0, 65535),
    alt_m=st.integers(-32768, 32767),
    alarm=st.integers(0, 2**32 - 1),
    status=st.integers(0, 2**32 - 1),
    mileage_km=st.one_of(st.none(), st.integers(0, 2**32 - 1).map(lambda x: x / 10)),
)
phone = st.sampled_from([*(t.zfill(12) for t in TERMINALS), "013900000009"])


@st.composite
def jt808_payload(draw: st.DrawFn) -> tuple[str, bytes]:
    topic_phone = draw(phone)
    frame_phone = draw(st.one_of(st.just(topic_phone), phone))
    version = draw(st.sampled_from([2013, 2019]))
    if draw(st.booleans()):
        loc = draw(location)
        frame = encode_location(
            frame_phone, 1, lat=loc.lat, lon=loc.lon, speed_kmh=loc.speed_kmh,
            heading=loc.heading, alt_m=loc.alt_m, time_ms=loc.time_ms, alarm=loc.alarm,
            status=loc.status, mileage_km=loc.mileage_km, version=version,
        )  # fmt: skip
    else:
        locs = draw(st.lists(location, max_size=4))
        frame = encode_location_batch(
            frame_phone, 1, locs, backfill=draw(st.booleans()), version=version
        )
    data = bytearray(frame * draw(st.integers(1, 2)))  # one or two frames per payload
    for pos, value in draw(
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3)
    ):
        data[pos % len(data)] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return topic_phone, bytes(data[:cut] if cut is not None else data)


@FAST
@given(jt808_payload())
def test_jt808_frames_and_mutations_are_rows_or_dead_letters(case: tuple[str, bytes]) -> None:
    topic_phone, payload = case
    f, c = take(f"jt808/{topic_phone}/up", payload)
    check_accounting(f, c)
    decoded = decode_position_payloads_scalar([payload])
    known = REGISTRY.by_terminal(topic_phone) is not None
    row_dead = sum(1 for d in f.dead_letters if d.reason in ROW_REASONS)
    if known:  # every position the decoder found is a row or a dead letter of its own
        assert len(f.batch) + row_dead == len(decoded)
        assert set(f.batch.vehicle.tolist()) <= {REGISTRY.by_terminal(topic_phone)}
    else:
        assert len(f.batch) == 0


@FAST
@given(st.binary(max_size=300), phone)
def test_random_bytes_on_a_jt808_topic(payload: bytes, topic_phone: str) -> None:
    f, c = take(f"jt808/{topic_phone}/up", payload)
    check_accounting(f, c)


# -- JSON -------------------------------------------------------------------------------------

number = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1000, 10_000),
)
value = st.one_of(number, st.none(), st.booleans(), st.text(max_size=8))
position = st.dictionaries(
    st.sampled_from(["ts", "lat", "lon", "speed", "heading", "alt", "acc", "alarm", "status",
                     "mileage", "x"]),
    value,
).map(lambda d: {"ts": NOW, "lat": 30.4, "lon": 106.6, **d})  # fmt: skip
json_doc: Any = st.one_of(
    position,
    st.lists(st.one_of(position, value), max_size=10),
    st.recursive(value, lambda kids: st.lists(kids, max_size=3), max_leaves=6),
)


@FAST
@given(json_doc, st.sampled_from([*TERMINALS, "13900000009"]), st.booleans())
def test_json_payloads_are_rows_or_dead_letters(doc: Any, terminal: str, mangle: bool) -> None:
    payload = json.dumps(doc, ensure_ascii=False).encode()  # orjson cannot write > 64 bits
    if mangle:
        payload = payload[: len(payload) // 2]
    f, c = take(f"fleet/{terminal}/position", payload)
    check_accounting(f, c)
    if REGISTRY.by_terminal(terminal) is None or mangle:
        return
    items = doc if isinstance(doc, list) else [doc]
    if isinstance(doc, list) and len(doc) > LIMITS.max_positions:
        assert [d.reason for d in f.dead_letters] == ["too_many_positions"]
    elif doc == []:
        assert [d.reason for d in f.dead_letters] == ["empty_payload"]
    else:
        assert len(f.batch) + len(f.dead_letters) == len(items)
    assert all(not math.isinf(float(m)) for m in f.batch.mileage.tolist())
