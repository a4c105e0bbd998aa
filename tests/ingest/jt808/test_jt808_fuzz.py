"""Random and mutated input: only FrameError, never a hang, work linear in the length."""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jt808_helpers import random_position_frame

from fleet.errors import FrameError
from ingest.jt808.codec import decode_frame
from ingest.jt808.frame import build_frame
from ingest.jt808.framing import FrameSplitter, split_frames
from ingest.jt808.messages import MSG_LOCATION
from ingest.jt808.position import decode_position_payloads


def _decode_any(data: bytes) -> None:
    for lenient in (False, True):
        with contextlib.suppress(FrameError):
            decode_frame(data, lenient=lenient)
        frames, _ = split_frames(data)
        for f in frames:
            with contextlib.suppress(FrameError):
                decode_frame(f, lenient=lenient)
    decode_position_payloads([data], lenient=lambda p: True)
    decode_position_payloads([data])


@pytest.mark.timeout(60)
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_frame_error(data: bytes) -> None:
    _decode_any(data)
    _decode_any(b"\x7e" + data + b"\x7e")


@pytest.mark.timeout(60)
@settings(max_examples=400, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.tuples(st.integers(0, 10**6),
       st.integers(0, 255)), min_size=1, max_size=6))  # fmt: skip
def test_mutated_frames_raise_only_frame_error(
    rng: random.Random, edits: list[tuple[int, int]]
) -> None:
    frame = bytearray(random_position_frame(rng))
    for pos, value in edits:
        frame[pos % len(frame)] = value
    _decode_any(bytes(frame))
    sp = FrameSplitter(max_frame_bytes=64)
    for i in range(0, len(frame), 7):
        for f in sp.feed(bytes(frame[i : i + 7])):
            _decode_any(f)


def _lines(fn: Callable[[], Any]) -> int:
    """Python lines executed by ``fn``: a measure of work that does not depend on timing."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _swallow(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(FrameError):
            fn()

    return run


def _escapes(n: int) -> bytes:
    return build_frame(0x0900, b"\x7d\x7e" * (n // 2), phone="1", serial=1)


def _tiny_items(n: int) -> bytes:
    block = bytes(22) + bytes.fromhex("250101000000")
    return build_frame(MSG_LOCATION, block + b"\xe0\x00" * (n // 2), phone="1", serial=1)


def _bad_escapes(n: int) -> bytes:
    return b"\x7e" + b"\x7d\x7d" * n + b"\x7e"


CASES: dict[str, Callable[[int], Callable[[], Any]]] = {
    "escapes": lambda n: lambda: decode_frame(_escapes(n)),
    "tiny items strict": lambda n: lambda: decode_frame(_tiny_items(n)),
    "tiny items lenient": lambda n: lambda: decode_frame(_tiny_items(n), lenient=True),
    "bad escapes lenient": lambda n: _swallow(lambda: decode_frame(_bad_escapes(n), lenient=True)),
    "splitter": lambda n: lambda: FrameSplitter(1 << 20).feed(b"\x7e\x01\x7e" * n),
    "split payload": lambda n: lambda: split_frames(b"\x7e\x01\x7e" * n),
    "batch path": lambda n: lambda: decode_position_payloads([_tiny_items(n)] * 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_work_is_linear_in_length(case: str) -> None:
    small, big = (_lines(CASES[case](n)) for n in (100, 800))
    assert big <= 8 * small * 1.25 + 200, (small, big)
