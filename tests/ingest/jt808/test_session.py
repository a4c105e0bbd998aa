"""The gateway's session core without sockets or an event loop: bytes and time in, actions out."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jt808_helpers import random_location

from ingest.jt808.codec import (
    decode_frame,
    encode_authentication,
    encode_heartbeat,
    encode_location,
    encode_registration,
    encode_split,
)
from ingest.jt808.config import GatewayConfig
from ingest.jt808.messages import LocationBatch, PlatformReply, RegistrationReply
from ingest.jt808.session import (
    REG_NO_TERMINAL,
    REG_NO_VEHICLE,
    REG_OK,
    REG_TERMINAL_TAKEN,
    Action,
    Authenticate,
    Close,
    GatewayStats,
    ProvisionedTerminal,
    Provisioning,
    Publish,
    Register,
    Send,
    TerminalSession,
    auth_code,
)

SECRET = b"test-secret-0123456789"
A, B = "13900000001", "13900000002"
PROVISIONED = Provisioning(
    [
        ProvisionedTerminal(A, "v1", "川X00001", vin="LFV3A23C0K3000001", maker="FWSIM"),
        ProvisionedTerminal(B, "v2", "川X00002"),
    ]
)


def session(now: float = 0.0, **kw: Any) -> TerminalSession:
    cfg = GatewayConfig(**kw)
    return TerminalSession(cfg, PROVISIONED, SECRET, GatewayStats(), now)


def one(s: TerminalSession, frame: bytes, now: float = 0.0) -> Action | None:
    frames = s.receive_data(frame, now)
    assert len(frames) == 1
    return s.receive_frame(frames[0], now)


def reply_of(action: Action | None) -> object:
    assert isinstance(action, Send | Close), action
    frame = action.frame if isinstance(action, Send) else action.farewell
    return decode_frame(frame).message


def log_in(s: TerminalSession, phone: str = A, now: float = 0.0, registration: int = 1) -> str:
    """Register (the store gives ``registration``) and authenticate; returns the code."""
    req = one(s, encode_registration(phone, 1, plate="川X00001"), now)
    assert isinstance(req, Register) and req.phone == phone
    done = s.registered(req, registration, now)
    assert isinstance(done, Publish)
    reply = decode_frame(done.replies[0]).message
    assert isinstance(reply, RegistrationReply) and reply.result == REG_OK
    auth = one(s, encode_authentication(phone, 2, reply.auth_code), now)
    assert isinstance(auth, Authenticate)
    assert isinstance(s.authenticate(auth, registration, now), Publish)
    assert s.authenticated
    return reply.auth_code


# -- item 2: who may register and speak ------------------------------------------------------


def test_only_a_provisioned_terminal_may_register() -> None:
    s = session()
    out = one(s, encode_registration("13811112222", 1, plate="川X99999"))
    assert reply_of(out) == RegistrationReply(1, REG_NO_TERMINAL, "")
    assert s.stats.by_reason["unprovisioned"] == 1
    # Leading zeros of the BCD phone are padding: 013900000001 is A.
    assert isinstance(one(session(), encode_registration("0" + A, 1, plate="x")), Register)


@pytest.mark.parametrize(
    ("match", "kw", "ok"),
    [
        (("plate",), {"plate": "川X00001"}, True),
        (("plate",), {"plate": "川X00009"}, False),
        (("plate",), {"plate": "川X00001", "plate_color": 0}, False),  # colour 0: a VIN
        (("vin",), {"plate": "LFV3A23C0K3000001", "plate_color": 0}, True),
        (("vin",), {"plate": "LFV3A23C0K3000009", "plate_color": 0}, False),
        (("maker",), {"plate": "x", "manufacturer": "FWSIM"}, True),
        (("maker",), {"plate": "x", "manufacturer": "OTHER"}, False),
        (("plate", "maker"), {"plate": "川X00001", "manufacturer": "OTHER"}, False),
        ((), {"plate": "anything"}, True),
    ],
)
def test_registration_must_carry_what_was_provisioned(
    match: tuple[str, ...], kw: dict[str, Any], ok: bool
) -> None:
    s = session(registration_match=match)
    out = one(s, encode_registration(A, 7, **kw))
    if ok:
        assert isinstance(out, Register)
    else:
        assert reply_of(out) == RegistrationReply(7, REG_NO_VEHICLE, "")
        assert s.stats.by_reason["registration_mismatch"] == 1


def test_a_registered_terminal_is_refused_until_reset() -> None:
    s = session()
    req = one(s, encode_registration(A, 3, plate="川X00001"))
    assert isinstance(req, Register)
    out = s.registered(req, None, 0.0)  # the store: already registered
    assert reply_of(out) == RegistrationReply(3, REG_TERMINAL_TAKEN, "")
    assert s.stats.registrations_refused == 1 and not s.authenticated


def test_the_auth_code_is_bound_to_the_terminal_and_its_registration() -> None:
    code = log_in(session())
    assert code == auth_code(SECRET, A, 1)
    # After a restart (a new session, the same secret) the code still works ...
    s = session()
    auth = one(s, encode_authentication(A, 1, code))
    assert isinstance(auth, Authenticate)
    assert isinstance(s.authenticate(auth, 1, 0.0), Publish) and s.authenticated
    # ... but not for another terminal, nor after a reset and new registration,
    # nor with another gateway secret.
    s = session()
    auth = one(s, encode_authentication(B, 1, code))
    assert isinstance(auth, Authenticate)
    assert reply_of(s.authenticate(auth, 1, 0.0)) == PlatformReply(1, 0x0102, 1)
    s = session()
    auth = one(s, encode_authentication(A, 1, code))
    assert isinstance(auth, Authenticate)
    assert reply_of(s.authenticate(auth, 2, 0.0)) == PlatformReply(1, 0x0102, 1)
    assert reply_of(s.authenticate(auth, None, 0.0)) == PlatformReply(1, 0x0102, 1)
    assert auth_code(b"another-secret-0123", A, 1) != code
    assert s.stats.auth_failed == 2 and not s.authenticated


def test_an_unprovisioned_terminal_is_refused_without_asking_the_store() -> None:
    s = session()
    out = one(s, encode_authentication("13811112222", 1, auth_code(SECRET, "13811112222", 1)))
    assert reply_of(out) == PlatformReply(1, 0x0102, 1)


def test_nothing_passes_before_authentication() -> None:
    s = session()
    out = one(s, encode_heartbeat(A, 5))
    assert reply_of(out) == PlatformReply(5, 0x0002, 1)
    assert s.stats.unauthenticated == 1
    log_in(s)
    out = one(s, encode_heartbeat(A, 6))
    assert isinstance(out, Publish) and out.phone == "0" + A  # the topic: as in the header
    assert decode_frame(out.replies[0]).message == PlatformReply(6, 0x0002, 0)


@pytest.mark.parametrize("authenticated", [True, False])
def test_one_connection_is_one_terminal(authenticated: bool) -> None:
    s = session(require_auth=authenticated)
    if authenticated:
        log_in(s)
    else:
        assert isinstance(one(s, encode_heartbeat(A, 1)), Publish)
    out = one(s, encode_heartbeat(B, 9))
    assert isinstance(out, Close) and out.reason == "other_terminal"
    assert reply_of(out) == PlatformReply(9, 0x0002, 1)
    assert s.stats.other_terminal == 1 and s.stats.by_reason["closed_other_terminal"] == 1
    # The 2019 header pads the same phone to 20 digits: still the same terminal.
    s = session(require_auth=False)
    one(s, encode_heartbeat(A, 1))
    assert isinstance(one(s, encode_heartbeat(A, 2, version=2019)), Publish)


def test_refusals_in_a_row_close_the_connection() -> None:
    s = session(max_bad_frames=3)
    outs = [one(s, encode_heartbeat(A, k)) for k in range(3)]
    assert [type(o) for o in outs] == [Send, Send, Close]
    assert reply_of(outs[2]) == PlatformReply(2, 0x0002, 1)


# -- item 9: limits that count frames, not bytes ------------------------------------------------


def test_a_trickle_of_bytes_never_keeps_a_connection_open() -> None:
    s = session(heartbeat_s=60, first_frame_timeout_s=30)
    frame = encode_heartbeat(A, 1)
    now = 0.0
    for byte in frame[:-1]:  # one byte every 18 s, never a whole frame
        if now >= s.deadline:
            break
        assert s.receive_data(bytes([byte]), now) == []
        assert s.poll(now) is None
        now += 18
    closed = s.poll(now)
    assert closed is not None and closed.reason == "idle" and now <= 30 + 18
    assert s.stats.idle_closed == 1


def test_the_idle_timer_counts_accepted_frames() -> None:
    s = session(heartbeat_s=60, require_auth=False)
    for k in range(20):  # a heartbeat every 60 s keeps it open for 20 minutes
        now = 60.0 * k
        assert s.poll(now) is None
        assert isinstance(one(s, encode_heartbeat(A, k), now), Publish)
        assert s.deadline == now + 180
    # Bytes without a frame do not move the deadline; refused frames neither.
    s.receive_data(b"\x7e\x02\x00", now + 100)
    assert s.deadline == now + 180
    assert s.poll(now + 180) is not None


def test_refused_frames_do_not_keep_a_connection_open() -> None:
    s = session(heartbeat_s=60, first_frame_timeout_s=30)
    for k in range(5):
        assert reply_of(one(s, encode_heartbeat(A, k), k * 5.0)).result == 1  # type: ignore[attr-defined]
    assert s.deadline == 30.0


def test_junk_without_a_delimiter_closes() -> None:
    s = session(max_junk_bytes=1000)
    for k in range(10):
        assert s.receive_data(b"\x55" * 100, k * 0.1) == []
        assert s.closed is None
    s.receive_data(b"\x55", 1.0)
    assert s.closed is not None and s.closed.reason == "junk"
    assert s.stats.junk_closed == 1


def test_a_frame_beyond_max_frame_bytes_closes() -> None:
    s = session(max_frame_bytes=256)
    assert s.receive_data(b"\x7e" + b"\x55" * 300, 0.0) == []
    assert s.closed is not None and s.closed.reason == "frame_too_long"


def _split_frames(phone: str, serial: int, n_locations: int = 40) -> list[bytes]:
    rng = random.Random(serial)
    batch = LocationBatch(1, tuple(random_location(rng) for _ in range(n_locations)))
    return encode_split(batch, phone=phone, serial=serial, max_body=200)


def test_a_split_message_is_published_whole_and_each_part_answered() -> None:
    s = session(require_auth=False)
    parts = _split_frames(A, 100)
    outs = [one(s, p, 1.0) for p in reversed(parts)]
    assert outs[:-1] == [None] * (len(parts) - 1)
    last = outs[-1]
    assert isinstance(last, Publish) and last.payload == b"".join(parts)
    answered = sorted(decode_frame(r).message.reply_serial for r in last.replies)  # type: ignore[union-attr]
    assert answered == list(range(100, 100 + len(parts)))


def test_unfinished_split_messages_are_bounded_in_count_bytes_and_age() -> None:
    s = session(require_auth=False, split_max_pending=4, split_max_bytes=8192, split_max_age_s=60)
    # Count: the fifth unfinished message drops the oldest.
    for k in range(5):
        assert one(s, _split_frames(A, 1000 * (k + 1))[0], float(k)) is None
    assert s.stats.by_reason["split_overflow"] == 1 and s.stats.split_dropped == 1
    # Bytes: big first parts push older ones out long before the count does.
    s = session(require_auth=False, split_max_pending=100, split_max_bytes=4096)
    for k in range(30):
        one(s, _split_frames(A, 1000 * (k + 1))[0], 0.0)
    assert 0 < s.stats.split_dropped < 30
    assert s._splits.bytes_held <= 4096
    # Age: a message whose first part is older than split_max_age_s is dropped by poll().
    s = session(require_auth=False, heartbeat_s=1000, split_max_age_s=60)
    parts = _split_frames(A, 7)
    assert one(s, parts[0], 0.0) is None
    assert s.deadline == pytest.approx(60.001)
    assert s.poll(61.0) is None
    assert s.stats.by_reason["split_incomplete"] == 1
    # The rest arrives too late to make a whole message: nothing is published.
    assert all(one(s, p, 62.0) is None for p in parts[1:])


def test_a_duplicate_sub_package_is_answered_bad() -> None:
    s = session(require_auth=False)
    part = _split_frames(A, 5)[0]
    assert one(s, part) is None
    assert reply_of(one(s, part)) == PlatformReply(5, 0x0704, 2)


def test_rate_delay_is_a_token_bucket() -> None:
    s = session(rate_per_s=10, rate_burst=3)
    assert [s.rate_delay(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert s.rate_delay(0.0) == pytest.approx(0.1)
    assert s.rate_delay(10.0) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.floats(0, 50)), max_size=40))
def test_no_input_keeps_a_connection_open_without_accepted_frames(
    chunks: list[tuple[bytes, float]],
) -> None:
    """Whatever bytes arrive, at whatever pace: without an accepted frame the connection
    is closed by first_frame_timeout_s (the core's deadline never moves)."""
    s = session(first_frame_timeout_s=30, heartbeat_s=60)
    now = 0.0
    for data, gap in chunks:
        now += gap
        if s.poll(now) is not None:
            break
        for raw in s.receive_data(data, now):
            s.receive_frame(raw, now)
        if s.closed is not None:
            break
    assert s.deadline <= 30.0 or s._splits.next_expiry_ms() is not None
    assert s.closed is not None or s.poll(max(now, 30.0)) is not None


def test_location_of_an_authenticated_terminal_is_published() -> None:
    s = session()
    log_in(s)
    loc = encode_location(A, 3, lat=30.5, lon=106.6, speed_kmh=40, heading=0, alt_m=300,
                          time_ms=1_764_034_200_000)  # fmt: skip
    out = one(s, loc, 1.0)
    assert isinstance(out, Publish) and out.payload == loc
    assert decode_frame(out.replies[0]).message == PlatformReply(3, 0x0200, 0)
