"""0x0702 driver identity report (驾驶员身份信息采集上报): codec, ingest, and the rules engine."""

from __future__ import annotations

import pytest

from fleet.errors import FrameError
from ingest.core import IngestCore
from ingest.json_codec import JsonLimits
from ingest.jt808.codec import decode_frame, encode_location, encode_message
from ingest.jt808.messages import DriverIdentity, decode_body, encode_body
from ingest.jt808.position import decode_position_payloads
from rules.config import RulesConfig
from rules.engine import RulesEngine
from rules.orders import DispatchOrder
from tests.rules.conftest import local_ms, make_registry

T = local_ms(2026, 11, 25, 9, 30, 15)
CARD = DriverIdentity(
    status=1,
    time_ms=T,
    read_result=0,
    name="李四",
    certificate="510000199002021234",
    issuer="广安市交通运输局",
    valid_until="2031-12-31",
)


@pytest.mark.parametrize("version", [2013, 2019])
def test_card_round_trips_in_both_layouts(version: int) -> None:
    card = CARD if version == 2013 else DriverIdentity(**{**_fields(CARD), "id_number": "X" * 18})
    msg_id, body = encode_body(card, version=version)
    assert msg_id == 0x0702
    assert decode_body(msg_id, body, version=version) == card
    assert card.driver_key == "510000199002021234"


def _fields(c: DriverIdentity) -> dict[str, object]:
    return {k: getattr(c, k) for k in DriverIdentity.__slots__}


def test_card_out_and_unreadable_card_name_nobody() -> None:
    out = DriverIdentity(status=2, time_ms=T)
    assert decode_body(*encode_body(out)) == out and out.driver_key is None
    locked = DriverIdentity(status=1, time_ms=T, read_result=2)
    assert decode_body(*encode_body(locked)) == locked and locked.driver_key is None


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (bytes([9]) + bytes.fromhex("261125093015"), "status"),
        (bytes([1]) + bytes.fromhex("261125093015"), "needs"),
        (encode_body(CARD)[1][:-4] + bytes.fromhex("20311399"), "not a date"),
        (encode_body(CARD)[1][:-4] + bytes.fromhex("2031AB31"), "not BCD"),
        (encode_body(CARD)[1], "2019"),  # a 2013 body read as 2019 lacks the ID number
    ],
)
def test_bad_bodies_are_frame_errors_with_a_reason(body: bytes, what: str) -> None:
    with pytest.raises(FrameError, match=what):
        decode_body(0x0702, body, version=2019 if what == "2019" else 2013)


def test_card_through_ingest_reaches_the_engine_as_driver_mismatch() -> None:
    reg = make_registry(3)
    core = IngestCore(
        reg,
        limits=JsonLimits(),
        max_rows=1000,
        max_age_ms=50,
        jt808_decoder=lambda payloads: decode_position_payloads(payloads),
    )
    phone = "013800000000"  # v0's terminal 13800000000 as 12 BCD digits
    core.add(f"jt808/{phone}/up", encode_message(CARD, phone=phone, serial=1), T)
    for k in range(6):
        frame = encode_location(
            phone,
            2 + k,
            lat=30.7,
            lon=106.7 + k * 1e-3,
            speed_kmh=40.0,
            heading=0,
            alt_m=300,
            time_ms=T + k * 30_000,
        )
        core.add(f"jt808/{phone}/up", frame, T + k * 30_000)
    flush = core.flush()
    assert len(flush.others) == 1 and len(flush.batch) == 6
    order = DispatchOrder("o1", "v0", "local", T - 60_000, T + 3_600_000, driver_id="d-zhang")
    eng = RulesEngine(RulesConfig(), reg)
    eng.add_order(order)
    eng.driver_cards(flush.others)
    ev = [e for e in eng.process(flush.batch) if e.kind == "driver_mismatch"]
    assert [(e.action, e.detail["driver"]) for e in ev] == [("open", "510000199002021234")]
    # a resolver from the records' drivers maps the certificate to the order's driver id
    two = RulesEngine(RulesConfig(), reg)
    two.add_order(order)
    two.card_driver = lambda msg: {"510000199002021234": "d-zhang"}.get(msg.driver_key)
    two.driver_cards(flush.others)
    assert [e for e in two.process(flush.batch) if e.kind == "driver_mismatch"] == []
    assert decode_frame(encode_message(CARD, phone=phone, serial=1)).message == CARD
