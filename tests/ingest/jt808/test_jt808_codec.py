"""Encode → decode round trips for every message; headers; split packages; bit names."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jt808_helpers import random_location

from fleet.errors import FrameError, Misuse
from ingest.jt808.bits import alarm_names, status_names
from ingest.jt808.codec import (
    decode_frame,
    encode_authentication,
    encode_heartbeat,
    encode_location,
    encode_location_batch,
    encode_logout,
    encode_message,
    encode_platform_reply,
    encode_registration,
    encode_registration_reply,
    encode_split,
    encode_terminal_reply,
)
from ingest.jt808.messages import (
    Authentication,
    Heartbeat,
    Location,
    LocationBatch,
    Logout,
    PlatformReply,
    RawMessage,
    Registration,
    RegistrationReply,
    SplitPart,
    TerminalReply,
)
from ingest.jt808.reassembly import Reassembler

versions = st.sampled_from([2013, 2019])
phones = st.integers(0, 10**12 - 1).map(str)
serials = st.integers(0, 0xFFFF)


def _expected(loc: Location) -> Location:
    from dataclasses import replace

    status = loc.status & ~0xC | (4 if loc.lat < 0 else 0) | (8 if loc.lon < 0 else 0)
    return replace(loc, status=status, lat=abs(loc.lat) * (-1 if loc.lat < 0 else 1) + 0.0)


@given(st.randoms(use_true_random=False), versions, phones, serials)
def test_location_round_trip(rng: random.Random, version: int, phone: str, serial: int) -> None:
    loc = random_location(rng)
    d = decode_frame(encode_message(loc, phone=phone, serial=serial, version=version))
    width = 20 if version == 2019 else 12
    assert d.header.phone == phone.rjust(width, "0")
    assert (d.header.serial, d.header.version, d.header.msg_id) == (serial, version, 0x0200)
    assert d.message == _expected(loc)


@given(st.randoms(use_true_random=False), versions, st.booleans())
def test_location_batch_round_trip(rng: random.Random, version: int, backfill: bool) -> None:
    locs = [random_location(rng) for _ in range(rng.randrange(0, 6))]
    d = decode_frame(encode_location_batch("13912344329", 1, locs, backfill=backfill,
                                           version=version))  # fmt: skip
    assert isinstance(d.message, LocationBatch)
    assert d.message.backfill is backfill
    assert d.message.locations == tuple(_expected(x) for x in locs)


def test_encode_location_keywords() -> None:
    raw = encode_location(
        "13912344329", 7, lat=-30.5, lon=106.25, speed_kmh=42.5, heading=270, alt_m=310,
        time_ms=1_764_034_200_000, alarm=1 << 27, status=1, mileage_km=12345.6, fuel_l=40.5,
        recorder_speed_kmh=41.0, overspeed=(1, 99), area_alarm=(2, 5, 1), ext_status=3,
        io_status=1, signal=20, satellites=9,
    )  # fmt: skip
    loc = decode_frame(raw).message
    assert isinstance(loc, Location)
    assert (loc.lat, loc.lon, loc.speed_kmh, loc.heading, loc.alt_m) == (-30.5, 106.25, 42.5,
                                                                         270, 310)  # fmt: skip
    assert loc.time_ms == 1_764_034_200_000 and loc.acc
    assert loc.mileage_km == 12345.6 and loc.fuel_l == 40.5 and loc.recorder_speed_kmh == 41.0
    assert loc.overspeed == (1, 99) and loc.area_alarm == (2, 5, 1)
    assert (loc.ext_status, loc.io_status, loc.signal, loc.satellites) == (3, 1, 20, 9)
    assert "illegal_ignition" in alarm_names(loc.alarm)


@given(versions, phones, serials, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
       st.integers(0, 255))  # fmt: skip
def test_replies_round_trip(version: int, phone: str, serial: int, rs: int, rid: int,
                            res: int) -> None:  # fmt: skip
    d = decode_frame(encode_platform_reply(phone, serial, reply_serial=rs, reply_msg_id=rid,
                                           result=res, version=version))  # fmt: skip
    assert d.message == PlatformReply(rs, rid, res)
    d = decode_frame(encode_terminal_reply(phone, serial, reply_serial=rs, reply_msg_id=rid,
                                           result=res, version=version))  # fmt: skip
    assert d.message == TerminalReply(rs, rid, res)
    d = decode_frame(encode_registration_reply(phone, serial, reply_serial=rs, result=0,
                                               auth_code="abc123", version=version))  # fmt: skip
    assert d.message == RegistrationReply(rs, 0, "abc123")
    d = decode_frame(encode_registration_reply(phone, serial, reply_serial=rs, result=2))
    assert d.message == RegistrationReply(rs, 2, "")


@pytest.mark.parametrize("version", [2011, 2013, 2019])
def test_registration_round_trip(version: int) -> None:
    raw = encode_registration("13912344329", 3, plate="川X12345", plate_color=2, province=51,
                              city=1600, manufacturer="FW", model="M1", terminal_id="T7",
                              version=version)  # fmt: skip
    d = decode_frame(raw)
    assert d.message == Registration(51, 1600, "FW", "M1", "T7", 2, "川X12345", layout=version)


@pytest.mark.parametrize("version", [2013, 2019])
def test_simple_messages_round_trip(version: int) -> None:
    assert decode_frame(encode_heartbeat("1", 1, version=version)).message == Heartbeat()
    assert decode_frame(encode_logout("1", 1, version=version)).message == Logout()
    auth = decode_frame(encode_authentication("1", 1, "code42", imei="860000000000001",
                                              software_version="1.0", version=version))  # fmt: skip
    if version == 2019:
        assert auth.message == Authentication("code42", "860000000000001", "1.0")
    else:
        assert auth.message == Authentication("code42")
    raw = decode_frame(encode_message(RawMessage(0x0900, b"\x7e\x7d"), phone="1", serial=1))
    assert raw.message == RawMessage(0x0900, b"\x7e\x7d")


def test_split_and_reassemble() -> None:
    rng = random.Random(5)
    batch = LocationBatch(1, tuple(random_location(rng) for _ in range(60)))
    frames = encode_split(batch, phone="13912344329", serial=65534, max_body=300)
    assert len(frames) > 2
    parts = [decode_frame(f) for f in frames]
    assert all(isinstance(p.message, SplitPart) for p in parts)
    r = Reassembler()
    out = [r.feed(p, 0) for p in reversed(parts)]
    assert out[:-1] == [None] * (len(parts) - 1)
    assert out[-1] is not None and out[-1].message == LocationBatch(
        1, tuple(_expected(x) for x in batch.locations)
    )
    assert len(r) == 0
    r.feed(parts[0], 0)
    with pytest.raises(FrameError) as info:
        r.feed(parts[0], 1)
    assert info.value.reason == "split"
    assert [e.reason for e in r.expire(10**9)] == ["split_incomplete"]


def test_header_checks() -> None:
    good = encode_heartbeat("13912344329", 1)
    with pytest.raises(FrameError, match="too_short"):
        decode_frame(good[:8] + b"\x7e")
    body_len_wrong = bytearray(bytes.fromhex("7e00020001012345678900000a00"))
    body_len_wrong.append(0)
    with pytest.raises(FrameError) as info:
        decode_frame(bytes(body_len_wrong) + b"\x7e")
    assert info.value.reason in ("body_length", "checksum")
    with pytest.raises(Misuse):
        encode_heartbeat("12ab", 1)
    with pytest.raises(Misuse):
        encode_message(RawMessage(1, bytes(2000)), phone="1", serial=1)


def test_bit_names_by_edition() -> None:
    assert alarm_names(1 << 27) == ["illegal_ignition"]
    assert alarm_names(1 << 15, 2019) == ["forbidden_time_driving"]
    assert alarm_names(1 << 15, 2013) == ["bit15"]
    assert alarm_names(1 << 31, 2013) == ["illegal_door_open"]
    assert alarm_names(1 << 31, 2019) == ["bit31"]
    assert status_names(0b1111) == ["acc_on", "located", "south_latitude", "west_longitude"]
    assert status_names(1 << 22, 2019) == ["moving"]
