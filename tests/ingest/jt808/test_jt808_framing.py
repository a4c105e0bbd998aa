"""Escaping, checksum, payload splitting and the TCP stream splitter."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import FrameError
from ingest.jt808.framing import FrameSplitter, checksum, escape, split_frames, unescape


@given(st.binary(max_size=300))
def test_escape_round_trip(data: bytes) -> None:
    esc = escape(data)
    assert b"\x7e" not in esc
    assert unescape(esc) == data


@given(st.binary(max_size=300))
def test_checksum_is_xor(data: bytes) -> None:
    assert checksum(data) == reduce(lambda a, b: a ^ b, data, 0)


@pytest.mark.parametrize("bad", [b"\x7d", b"\x7d\x03", b"ab\x7d\x7d\x01"])
def test_bad_escape(bad: bytes) -> None:
    with pytest.raises(FrameError) as info:
        unescape(bad)
    assert info.value.reason == "escape"
    assert unescape(bad, lenient=True).count(b"\x7d") >= 1


def test_split_frames_shared_and_separate_delimiters() -> None:
    assert split_frames(b"\x7eA\x7e\x7eB\x7e") == ([b"\x7eA\x7e", b"\x7eB\x7e"], [])
    assert split_frames(b"\x7eA\x7eB\x7e") == ([b"\x7eA\x7e", b"\x7eB\x7e"], [])
    frames, junk = split_frames(b"xx\x7eA\x7eyy")
    assert frames == [b"\x7eA\x7e"]
    assert [e.reason for _, e in junk] == ["delimiter", "delimiter"]
    assert split_frames(b"") == ([], [])


@given(
    st.lists(st.binary(min_size=1, max_size=40).map(escape), max_size=8),
    st.lists(st.integers(1, 50), min_size=1, max_size=20),
)
def test_stream_splitter_any_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(b"\x7e" + b + b"\x7e" for b in bodies)
    sp = FrameSplitter(max_frame_bytes=1000)
    got: list[bytes] = []
    i = k = 0
    while i < len(stream):
        n = cuts[k % len(cuts)]
        got += sp.feed(stream[i : i + n])
        i, k = i + n, k + 1
    assert got == [b"\x7e" + b + b"\x7e" for b in bodies]
    assert sp.errors == [] and sp.buffered == 0


def test_stream_splitter_limits_frame_size_and_resyncs() -> None:
    sp = FrameSplitter(max_frame_bytes=10)
    out = sp.feed(b"junk\x7e" + b"x" * 50)
    assert out == [] and sp.junk_bytes == 4
    assert [e.reason for e in sp.errors] == ["frame_too_long"]
    assert sp.buffered == 0
    assert sp.feed(b"y" * 5 + b"\x7eok\x7e") == [b"\x7eok\x7e"]
