"""Downlink codec against byte layouts written out from JT/T 808-2019 (and 2013) chapter 8."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jt808_helpers import random_location

from fleet.errors import FrameError, Misuse
from ingest.jt808.downlink import (
    TEXT_DISPLAY,
    TEXT_EMERGENCY,
    TEXT_TTS,
    AlarmConfirm,
    LocateQuery,
    LocateReply,
    ParamsQuery,
    ParamsReply,
    ParamsSet,
    TemporaryTracking,
    TerminalControl,
    TextMessage,
    decode_downlink,
    decode_uplink_reply,
    encode_downlink,
    encode_downlink_frame,
    encode_uplink_reply,
)
from ingest.jt808.frame import parse_frame
from ingest.jt808.messages import Location, decode_location, encode_body


def test_text_2013_is_flags_then_gbk() -> None:
    msg = TextMessage("请减速慢行", TEXT_EMERGENCY | TEXT_DISPLAY | TEXT_TTS)
    msg_id, body = encode_downlink(msg, version=2013)
    assert msg_id == 0x8300
    # flags 0b0000_1101: bit 0 emergency, bit 2 display, bit 3 TTS (table 38)
    assert body == bytes([0x0D]) + "请减速慢行".encode("gbk")
    assert decode_downlink(msg_id, body, version=2013) == msg


def test_text_2019_adds_the_text_type_byte() -> None:
    msg = TextMessage("请立即返回", TEXT_DISPLAY, text_type=2)
    msg_id, body = encode_downlink(msg, version=2019)
    assert body[:2] == bytes([0x04, 0x02])
    assert body[2:] == "请立即返回".encode("gbk")
    assert decode_downlink(msg_id, body, version=2019) == msg


def test_text_longer_than_1024_gbk_bytes_is_refused() -> None:
    with pytest.raises(Misuse):
        encode_downlink(TextMessage("慢" * 513))


def test_alarm_confirmation_layout() -> None:
    msg_id, body = encode_downlink(AlarmConfirm(alarm_types=1, alarm_serial=0x1234))
    assert msg_id == 0x8203
    assert body == bytes.fromhex("1234 00000001")
    assert decode_downlink(msg_id, body) == AlarmConfirm(1, 0x1234)


def test_locate_and_query_all_are_empty_bodies() -> None:
    assert encode_downlink(LocateQuery()) == (0x8201, b"")
    assert encode_downlink(ParamsQuery()) == (0x8104, b"")
    assert decode_downlink(0x8201, b"") == LocateQuery()


def test_temporary_tracking_layout() -> None:
    msg_id, body = encode_downlink(TemporaryTracking(5, 600))
    assert (msg_id, body) == (0x8202, bytes.fromhex("0005 00000258"))
    assert decode_downlink(msg_id, body) == TemporaryTracking(5, 600)


def test_set_parameters_layout_with_typed_values() -> None:
    msg = ParamsSet(((0x0055, 80), (0x0056, 10), (0x0083, "川X12345"), (0x0084, 1)))
    msg_id, body = encode_downlink(msg)
    plate = "川X12345".encode("gbk")
    assert msg_id == 0x8103
    assert body == (
        bytes([4])
        + bytes.fromhex("00000055 04 00000050")
        + bytes.fromhex("00000056 04 0000000A")
        + bytes.fromhex("00000083")
        + bytes([len(plate)])
        + plate
        + bytes.fromhex("00000084 01 01")
    )
    assert decode_downlink(msg_id, body) == msg


def test_parameter_out_of_its_width_is_refused() -> None:
    with pytest.raises(Misuse):
        encode_downlink(ParamsSet(((0x0084, 256),)))
    with pytest.raises(Misuse):
        encode_downlink(ParamsSet(((0x0055, "80"),)))
    with pytest.raises(Misuse):
        encode_downlink(ParamsSet(((0xF001, 3),)))  # unknown id: bytes only


def test_query_given_parameters_layout() -> None:
    msg_id, body = encode_downlink(ParamsQuery((0x0055, 0x0029)))
    assert (msg_id, body) == (0x8106, bytes.fromhex("02 00000055 00000029"))
    assert decode_downlink(msg_id, body) == ParamsQuery((0x0055, 0x0029))


def test_terminal_control_layout() -> None:
    assert encode_downlink(TerminalControl(4)) == (0x8105, b"\x04")
    assert decode_downlink(0x8105, b"\x04") == TerminalControl(4)


def test_location_reply_is_serial_then_a_0200_body() -> None:
    loc = Location(lat=30.456, lon=106.633, time_ms=1_764_034_200_000, speed_kmh=42.5, alarm=1)
    msg_id, body = encode_uplink_reply(LocateReply(0x0102, loc))
    assert msg_id == 0x0201 and body[:2] == b"\x01\x02"
    assert body[2:6] == b"\x00\x00\x00\x01"  # the alarm flags open the 0x0200 block
    assert decode_uplink_reply(msg_id, body) == LocateReply(0x0102, loc)


def test_parameters_reply_layout_and_names() -> None:
    body = bytes.fromhex("0007 02 00000055 04 00000078 0000F00D 02 ABCD")
    reply = decode_uplink_reply(0x0104, body)
    assert reply == ParamsReply(7, ((0x0055, 120), (0xF00D, b"\xab\xcd")))
    assert isinstance(reply, ParamsReply)
    assert reply.named() == {"speed_limit_kmh": 120, "0xF00D": "abcd"}
    assert encode_uplink_reply(reply) == (0x0104, body)


@pytest.mark.parametrize(
    ("msg_id", "body"),
    [
        (0x8203, b"\x00\x01"),
        (0x8202, b"\x00"),
        (0x8103, b"\x02\x00\x00\x00\x55\x04"),
        (0x8300, b""),
    ],
)
def test_truncated_bodies_are_bad_records(msg_id: int, body: bytes) -> None:
    with pytest.raises(FrameError):
        decode_downlink(msg_id, body)


def test_a_whole_frame_for_2019_carries_the_long_phone() -> None:
    raw = encode_downlink_frame(LocateQuery(), phone="13912344329", serial=9, version=2019)
    frame = parse_frame(raw)
    assert frame.header.msg_id == 0x8201 and frame.header.serial == 9
    assert frame.header.version == 2019 and frame.header.phone.endswith("13912344329")


@given(
    text=st.text(alphabet="请减速慢行立即返回联系监控室abc123 ", max_size=200),
    flags=st.integers(0, 255),
    version=st.sampled_from([2011, 2013, 2019]),
    seed=st.integers(0, 2**32),
)
def test_round_trips(text: str, flags: int, version: int, seed: int) -> None:
    rng = random.Random(seed)
    msgs = [
        TextMessage(text, flags, 1 if version != 2019 else rng.choice((1, 2))),
        AlarmConfirm(rng.getrandbits(32), rng.randrange(65536)),
        TemporaryTracking(rng.randrange(65536), rng.getrandbits(32)),
        ParamsSet(((0x0029, rng.getrandbits(32)), (0x005B, rng.randrange(65536)))),
        ParamsQuery(tuple(rng.getrandbits(32) for _ in range(rng.randrange(1, 5)))),
        TerminalControl(rng.randrange(256), text),
    ]
    for m in msgs:
        msg_id, body = encode_downlink(m, version=version)
        assert decode_downlink(msg_id, body, version=version) == m
    loc = random_location(rng)
    # what a 0x0200 body says (its south/west status bits follow the signs)
    loc = decode_location(encode_body(loc, version=version)[1])
    reply = LocateReply(rng.randrange(65536), loc)
    msg_id, body = encode_uplink_reply(reply, version=version)
    assert decode_uplink_reply(msg_id, body) == reply


def test_fleetwatch_decode_shows_commands_and_replies(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from ingest.jt808.cli import decode_main

    text = encode_downlink_frame(TextMessage("请减速慢行", 13), phone="13912344329", serial=3)
    params = encode_downlink_frame(
        ParamsSet(((0x55, 80),)), phone="13912344329", serial=4, version=2019
    )
    loc = Location(lat=30.5, lon=106.6, time_ms=1_764_034_200_000, speed_kmh=40)
    msg_id, body = encode_uplink_reply(LocateReply(3, loc))
    from ingest.jt808.frame import build_frame

    reply = build_frame(msg_id, body, phone="13912344329", serial=9)
    bad = build_frame(0x8203, b"\x00", phone="13912344329", serial=5)
    assert decode_main([text.hex(), params.hex(), reply.hex(), bad.hex()]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["command"] == {"kind": "text", "text": "请减速慢行", "flags": 13, "text_type": 1}
    assert out[1]["version"] == 2019 and out[1]["command"]["params"] == [[0x55, 80]]
    assert out[2]["command"]["kind"] == "locate_reply" and out[2]["positions"][0]["lat"] == 30.5
    assert not out[3]["valid"] and out[3]["why_invalid"] == "body"
