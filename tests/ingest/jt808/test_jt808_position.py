"""The vectorized position decoder agrees with the scalar reference."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from jt808_helpers import random_location, random_position_frame

from ingest.jt808.codec import encode_heartbeat, encode_split
from ingest.jt808.framing import checksum, escape, unescape
from ingest.jt808.messages import LocationBatch
from ingest.jt808.position import (
    COLUMNS,
    DecodedPayloads,
    decode_position_payloads,
    decode_position_payloads_scalar,
)


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    kind = rng.randrange(7)
    if kind >= 5:  # change the inside, then fix the checksum: only the content is wrong
        inner = bytearray(unescape(frame[1:-1])[:-1])
        for _ in range(rng.randrange(1, 3)):
            i = rng.randrange(len(inner))
            inner[i] = rng.choice((0, 1, 2, 4, 5, 0x13, 0x20, 0x99, 0xFF, rng.randrange(256)))
        return b"\x7e" + escape(bytes(inner) + bytes([checksum(bytes(inner))])) + b"\x7e"
    if kind == 0:
        b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        del b[rng.randrange(1, len(b)) :]
    elif kind == 2:
        b.insert(rng.randrange(len(b)), rng.choice((0x7D, 0x7E, 0x01, 0x02)))
    elif kind == 3:
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    else:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    return bytes(b)


def _random_payloads(rng: random.Random) -> list[bytes]:
    payloads = []
    for _ in range(rng.randrange(0, 12)):
        frames = []
        for _ in range(rng.randrange(0, 4)):
            r = rng.random()
            if r < 0.6:
                frames.append(random_position_frame(rng))
            elif r < 0.7:
                frames.append(encode_heartbeat(str(rng.randrange(100)), rng.randrange(65536)))
            else:
                frames.append(_mutate(rng, random_position_frame(rng)))
        payloads.append(b"".join(frames))
    return payloads


def _assert_same(a: DecodedPayloads, b: DecodedPayloads) -> None:
    assert set(a.columns) == set(COLUMNS) == set(b.columns)
    for k, dt in COLUMNS.items():
        assert a.columns[k].dtype == dt and b.columns[k].dtype == dt, k
        np.testing.assert_array_equal(a.columns[k], b.columns[k], err_msg=k)
    assert a.phones == b.phones
    assert [(i, e.reason, raw) for i, e, raw in a.errors] == [
        (i, e.reason, raw) for i, e, raw in b.errors
    ]
    assert a.others == b.others


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.sampled_from(["strict", "lenient", "some"]))
def test_batch_agrees_with_scalar(rng: random.Random, mode: str) -> None:
    payloads = _random_payloads(rng)
    lenient = {
        "strict": None,
        "lenient": lambda phone: True,
        "some": lambda phone: phone.endswith(("1", "3", "5")),
    }[mode]
    _assert_same(
        decode_position_payloads(payloads, lenient=lenient),
        decode_position_payloads_scalar(payloads, lenient=lenient),
    )


def test_empty_input() -> None:
    for payloads in ([], [b""], [b"", b"\x7e"]):
        got = decode_position_payloads(payloads)
        assert len(got) == 0 and got.phones == [] and got.errors == []
        _assert_same(got, decode_position_payloads_scalar(payloads))


def test_bad_frame_never_drops_neighbours() -> None:
    rng = random.Random(3)
    good = [random_position_frame(rng) for _ in range(3)]
    bad = bytearray(good[1])
    bad[-2] ^= 0xFF  # checksum
    payload = good[0] + bytes(bad) + good[2]
    got = decode_position_payloads([payload])
    want = decode_position_payloads_scalar([good[0] + good[2]])
    np.testing.assert_array_equal(got.columns["ts"], want.columns["ts"])
    assert [(i, e.reason) for i, e, _ in got.errors] == [(0, "checksum")]
    assert got.errors[0][2] == bytes(bad)


def test_split_message_in_one_payload_and_missing_part() -> None:
    rng = random.Random(9)
    batch = LocationBatch(1, tuple(random_location(rng) for _ in range(40)))
    frames = encode_split(batch, phone="13912344329", serial=10, max_body=400)
    whole = decode_position_payloads([b"".join(frames), b"".join(frames[1:])])
    assert len(whole) == 40 and whole.columns["backfill"].all()
    assert (whole.columns["source"] == 0).all()
    assert {e.reason for _, e, _ in whole.errors} == {"split_incomplete"}
    assert {i for i, _, _ in whole.errors} == {1}


def test_many_payloads_large() -> None:
    rng = random.Random(11)
    payloads = [random_position_frame(rng) for _ in range(3000)]
    _assert_same(decode_position_payloads(payloads), decode_position_payloads_scalar(payloads))
