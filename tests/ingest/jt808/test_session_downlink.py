"""Commands through the session core, without sockets: serials, replies, retries, expiry."""

from __future__ import annotations

import pytest
from test_session import A, log_in, one, session

from ingest.jt808.codec import decode_frame, encode_terminal_reply
from ingest.jt808.commands import (
    FINAL,
    STATES,
    TRANSITIONS,
    Command,
    InvalidTransition,
    OfflineQueue,
    advance,
    from_wire,
    reply_timeouts,
    to_wire,
    transition_to,
)
from ingest.jt808.downlink import (
    AlarmConfirm,
    LocateQuery,
    LocateReply,
    ParamsQuery,
    ParamsReply,
    TextMessage,
    decode_downlink,
    encode_uplink_reply,
)
from ingest.jt808.frame import build_frame, parse_frame
from ingest.jt808.messages import Location, RawMessage
from ingest.jt808.session import CommandReport, Publish, Send, TerminalSession


def cmd(cid: str, msg: object, expires_at: float = 1e9) -> Command:
    return Command(cid, "x", msg, expires_at)  # type: ignore[arg-type]


def ready(**kw: object) -> TerminalSession:
    s = session(**kw)
    log_in(s)
    return s


def sent_frames(s: TerminalSession) -> tuple[list[bytes], list[CommandReport]]:
    out = s.drain_downlink()
    return [a.frame for a in out if isinstance(a, Send)], [
        a for a in out if isinstance(a, CommandReport)
    ]


# -- the transition table -------------------------------------------------------------------


def test_the_table_only_leaves_final_states_never() -> None:
    assert {s for s, _ in TRANSITIONS} & FINAL == set()
    assert set(TRANSITIONS.values()) <= set(STATES)
    with pytest.raises(InvalidTransition):
        advance("acked", "send")
    with pytest.raises(InvalidTransition):
        advance("awaiting_confirmation", "send")  # a cut is never sent unconfirmed


@pytest.mark.parametrize(
    ("state", "reported", "want"),
    [
        ("queued", "sent", "sent"),
        ("sent", "sent", "sent"),  # a retransmission
        ("sent", "acked", "acked"),
        ("queued", "acked", "acked"),  # the "sent" report was lost on the way
        ("sent", "queued", "queued"),  # connection lost: waits again
        ("acked", "timeout", None),  # final states never change
        ("expired", "acked", None),
        ("queued", "queued", None),
        ("awaiting_confirmation", "sent", None),
        ("awaiting_confirmation", "expired", "expired"),
    ],
)
def test_reported_states(state: str, reported: str, want: str | None) -> None:
    assert transition_to(state, reported) == want


def test_reply_timeouts_follow_the_standard() -> None:
    # JT/T 808-2019 §7.5.1: T(n+1) = T(n) × (n+1)
    assert reply_timeouts(10, 3) == [10, 20, 60, 240]
    assert reply_timeouts(5, 0) == [5]


def test_wire_form_round_trips() -> None:
    for kind, msg in [
        ("text", TextMessage("请减速慢行", 13, 1)),
        ("confirm_alarm", AlarmConfirm(1, 0)),
        ("locate", LocateQuery()),
        ("params_get", ParamsQuery((0x55,))),
    ]:
        assert from_wire(to_wire(kind, msg)) == msg


def test_offline_queue_bounds_and_expiry() -> None:
    q = OfflineQueue(per_terminal=2, total=3)
    assert q.add("1", cmd("a", LocateQuery(), 10)) == []
    assert q.add("1", cmd("a", LocateQuery(), 10)) == []  # redelivered: kept once
    q.add("1", cmd("b", LocateQuery(), 20))
    pushed = q.add("1", cmd("c", LocateQuery(), 30))
    assert [c.id for c in pushed] == ["a"]  # the oldest of that terminal goes
    q.add("2", cmd("d", LocateQuery(), 5))
    assert [c.id for c in q.add("3", cmd("e", LocateQuery(), 40))] == ["d"]
    assert [(p, c.id) for p, c in q.expire(25)] == [("1", "b")]
    assert q.discard("e") and len(q) == 1
    assert [c.id for c in q.take("1")] == ["c"] and len(q) == 0


# -- the session ----------------------------------------------------------------------------


def test_a_command_is_sent_numbered_and_acked_by_the_general_reply() -> None:
    s = ready()
    s.command(cmd("c1", TextMessage("请减速慢行", 13)), 1.0)
    frames, reports = sent_frames(s)
    assert [r.state for r in reports] == ["sent"]
    f = parse_frame(frames[0])
    assert f.header.msg_id == 0x8300
    assert decode_downlink(0x8300, f.body) == TextMessage("请减速慢行", 13)
    reply = encode_terminal_reply(A, 9, reply_serial=f.header.serial, reply_msg_id=0x8300)
    out = one(s, reply, 2.0)
    assert isinstance(out, Publish) and out.replies == ()  # a reply is not answered
    _, reports = sent_frames(s)
    assert [(r.command.id, r.state, r.result) for r in reports] == [("c1", "acked", 0)]


def test_a_failure_result_fails_and_a_wrong_serial_is_not_matched() -> None:
    s = ready()
    s.command(cmd("c1", AlarmConfirm(1)), 1.0)
    frames, _ = sent_frames(s)
    serial = parse_frame(frames[0]).header.serial
    one(s, encode_terminal_reply(A, 9, reply_serial=serial + 1, reply_msg_id=0x8203), 1.5)
    one(s, encode_terminal_reply(A, 9, reply_serial=serial, reply_msg_id=0x8300), 1.5)
    assert s.stats.replies_unmatched == 2 and sent_frames(s) == ([], [])
    one(s, encode_terminal_reply(A, 9, reply_serial=serial, reply_msg_id=0x8203, result=3), 2)
    _, reports = sent_frames(s)
    assert [(r.state, r.result, r.reason) for r in reports] == [("failed", 3, "unsupported")]


def test_retransmission_after_t_then_2t_then_timeout() -> None:
    s = ready(command_reply_timeout_s=5, command_retransmissions=2)
    s.command(cmd("c1", LocateQuery()), 0.0)
    first, _ = sent_frames(s)
    assert s.deadline == 5.0
    s.poll(5.0)
    again, reports = sent_frames(s)
    assert again == first and [r.state for r in reports] == ["sent"]  # same bytes, same serial
    assert s.deadline == 15.0  # 5 × 2
    s.poll(14.9)
    assert sent_frames(s) == ([], [])
    s.poll(15.0)
    third, _ = sent_frames(s)
    assert third == first and s.deadline == 45.0  # 10 × 3
    s.poll(45.0)
    _, reports = sent_frames(s)
    assert [(r.state, r.command.attempts) for r in reports] == [("timeout", 3)]


def test_one_command_out_at_a_time_the_next_after_the_reply() -> None:
    s = ready()
    s.command(cmd("c1", LocateQuery()), 0.0)
    s.command(cmd("c2", ParamsQuery((0x55,))), 0.0)
    frames, _ = sent_frames(s)
    assert len(frames) == 1
    serial = parse_frame(frames[0]).header.serial
    loc = Location(lat=30.5, lon=106.6, time_ms=1_764_034_200_000, speed_kmh=40)
    msg_id, body = encode_uplink_reply(LocateReply(serial, loc))
    out = one(s, build_frame(msg_id, body, phone=A, serial=10), 1.0)
    assert isinstance(out, Publish) and out.replies == ()
    frames, reports = sent_frames(s)
    assert [(r.command.id, r.state) for r in reports] == [("c1", "acked"), ("c2", "sent")]
    assert reports[0].reply is not None and reports[0].reply["lat"] == 30.5
    serial2 = parse_frame(frames[0]).header.serial
    msg_id, body = encode_uplink_reply(ParamsReply(serial2, ((0x55, 100),)))
    one(s, build_frame(msg_id, body, phone=A, serial=11), 2.0)
    _, reports = sent_frames(s)
    assert reports[0].state == "acked" and reports[0].reply == {"params": {"speed_limit_kmh": 100}}


def test_a_command_behind_another_expires_and_the_rest_go_back_on_close() -> None:
    s = ready()
    s.command(cmd("c1", LocateQuery()), 0.0)
    s.command(cmd("c2", LocateQuery(), expires_at=3.0), 0.0)
    s.command(cmd("c3", LocateQuery()), 0.0)
    sent_frames(s)
    assert s.deadline == 3.0
    s.poll(3.0)
    _, reports = sent_frames(s)
    assert [(r.command.id, r.state) for r in reports] == [("c2", "expired")]
    back = s.unfinished(4.0)
    assert [(c.id, c.state) for c in back] == [("c1", "queued"), ("c3", "queued")]


def test_commands_only_after_authentication() -> None:
    s = session()
    with pytest.raises(Exception, match="not ready"):
        s.command(cmd("c1", LocateQuery()), 0.0)


def test_a_2019_terminal_gets_2019_frames() -> None:
    from ingest.jt808.codec import encode_authentication, encode_registration
    from ingest.jt808.session import Authenticate, Register

    s = session()
    req = one(s, encode_registration(A, 1, plate="川X00001", version=2019))
    assert isinstance(req, Register)
    done = s.registered(req, 1, 0.0)
    assert isinstance(done, Publish)
    code = decode_frame(done.replies[0]).message.auth_code  # type: ignore[union-attr]
    auth = one(s, encode_authentication(A, 2, code, version=2019))
    assert isinstance(auth, Authenticate)
    s.authenticate(auth, 1, 0.0)
    s.command(cmd("c1", TextMessage("请联系监控室", 4, 2)), 0.0)
    frames, _ = sent_frames(s)
    f = parse_frame(frames[0])
    assert f.header.version == 2019
    assert decode_downlink(0x8300, f.body, version=2019) == TextMessage("请联系监控室", 4, 2)
    assert isinstance(decode_frame(frames[0]).message, RawMessage)
