"""JT/T 808 downlink: the platform's commands to a terminal and the terminal's specific replies.

Pure codec (bytes ⇄ value objects), JT/T 808-2019 chapter 8; the 2013 (and 2011)
layouts where the message exists there and differs:

==========  ==============================  ==============================================
message     what                            body (2019; differences of 2013 noted)
==========  ==============================  ==============================================
0x8300      text to the terminal (§8.32)    flags BYTE (table 38), type BYTE (2019 only:
                                            1 notification, 2 service), text STRING (GBK)
0x8203      manual alarm confirmation       serial WORD (0: every alarm of the types),
            (§8.29)                         types DWORD (table 50 bits)
0x8201      locate now (§8.27)              empty; the terminal answers 0x0201
0x0201      location query reply (§8.28)    reply serial WORD, a 0x0200 body
0x8202      temporary tracking (§8.30)      interval WORD (s; 0 stops), validity DWORD (s)
0x8103      set parameters (§8.8)           count BYTE, items: id DWORD, length BYTE, value
0x8104      query all parameters (§8.9)     empty; the terminal answers 0x0104
0x8106      query given parameters (§8.10)  count BYTE, ids DWORD each
0x0104      parameters reply (§8.11)        reply serial WORD, count BYTE, items as 0x8103
0x8105      terminal control (§8.12)        command BYTE (table 20), parameters STRING
==========  ==============================  ==============================================

Parameter values are typed by :data:`PARAMETERS` (JT/T 808-2019 table 12, the ids
this platform sets or reads): DWORD and WORD values are ints, STRING values are str;
an id not in the table travels as raw bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from fleet.errors import FrameError, Misuse
from ingest.jt808.frame import build_frame
from ingest.jt808.messages import Location, decode_location, encode_body

__all__ = [
    "CONFIRMABLE_ALARMS",
    "CONTROL_FACTORY_RESET",
    "CONTROL_POWER_OFF",
    "CONTROL_RESET",
    "DOWNLINK_IDS",
    "MSG_LOCATE",
    "MSG_LOCATE_REPLY",
    "MSG_PARAMS_REPLY",
    "PARAMETERS",
    "TEXT_DISPLAY",
    "TEXT_EMERGENCY",
    "TEXT_TTS",
    "AlarmConfirm",
    "Downlink",
    "LocateQuery",
    "LocateReply",
    "ParamsQuery",
    "ParamsReply",
    "ParamsSet",
    "TemporaryTracking",
    "TerminalControl",
    "TextMessage",
    "Uplink",
    "decode_downlink",
    "decode_uplink_reply",
    "encode_downlink",
    "encode_downlink_frame",
    "encode_uplink_reply",
    "parameter_value",
]

MSG_PARAMS_SET = 0x8103
MSG_PARAMS_QUERY_ALL = 0x8104
MSG_CONTROL = 0x8105
MSG_PARAMS_QUERY = 0x8106
MSG_LOCATE = 0x8201
MSG_TRACK = 0x8202
MSG_CONFIRM_ALARM = 0x8203
MSG_TEXT = 0x8300
MSG_PARAMS_REPLY = 0x0104
MSG_LOCATE_REPLY = 0x0201

DOWNLINK_IDS = frozenset(
    {
        MSG_PARAMS_SET,
        MSG_PARAMS_QUERY_ALL,
        MSG_CONTROL,
        MSG_PARAMS_QUERY,
        MSG_LOCATE,
        MSG_TRACK,
        MSG_CONFIRM_ALARM,
        MSG_TEXT,
    }
)

# 0x8300 flags (JT/T 808-2019 table 38)
TEXT_EMERGENCY = 1 << 0
TEXT_DISPLAY = 1 << 2
TEXT_TTS = 1 << 3

# 0x8203 alarm types a platform may confirm by hand (JT/T 808-2019 table 50; the same
# bit numbers as the location report's alarm flags, table 24): emergency (SOS), danger
# warning, in/out of area, in/out of route, road section time, illegal ignition, illegal
# displacement. The terminal clears these latched bits once they are confirmed.
CONFIRMABLE_ALARMS = (1 << 0) | (1 << 3) | (1 << 20) | (1 << 21) | (1 << 22) | (1 << 27) | (1 << 28)

# 0x8105 command words (JT/T 808-2019 table 20): 1 wireless upgrade, 2 connect to a
# server, 3 power off, 4 reset, 5 factory reset, 6 data link off, 7 all radio off.
CONTROL_POWER_OFF = 3
CONTROL_RESET = 4
CONTROL_FACTORY_RESET = 5

# Terminal parameters (JT/T 808-2019 table 12): id → (name, type). The ones the
# platform sets or reads; any other id is carried raw.
PARAMETERS: Mapping[int, tuple[str, str]] = {
    0x0001: ("heartbeat_s", "DWORD"),
    0x0002: ("tcp_reply_timeout_s", "DWORD"),
    0x0003: ("tcp_retransmissions", "DWORD"),
    0x0004: ("udp_reply_timeout_s", "DWORD"),
    0x0005: ("udp_retransmissions", "DWORD"),
    0x0006: ("sms_reply_timeout_s", "DWORD"),
    0x0007: ("sms_retransmissions", "DWORD"),
    0x0013: ("main_server", "STRING"),
    0x0018: ("server_tcp_port", "DWORD"),
    0x0020: ("report_strategy", "DWORD"),  # 0 timed, 1 by distance, 2 both
    0x0021: ("report_scheme", "DWORD"),  # 0 by ACC, 1 by login and ACC
    0x0022: ("report_interval_no_driver_s", "DWORD"),
    0x0027: ("report_interval_sleep_s", "DWORD"),
    0x0028: ("report_interval_emergency_s", "DWORD"),
    0x0029: ("report_interval_s", "DWORD"),  # the default time interval
    0x002C: ("report_distance_m", "DWORD"),
    0x0030: ("corner_angle_deg", "DWORD"),
    0x0040: ("platform_phone", "STRING"),
    0x0048: ("listen_phone", "STRING"),
    0x0050: ("alarm_mask", "DWORD"),
    0x0055: ("speed_limit_kmh", "DWORD"),
    0x0056: ("overspeed_duration_s", "DWORD"),
    0x0057: ("continuous_driving_limit_s", "DWORD"),
    0x0058: ("daily_driving_limit_s", "DWORD"),
    0x0059: ("minimum_rest_s", "DWORD"),
    0x005A: ("maximum_parking_s", "DWORD"),
    0x005B: ("overspeed_warning_margin_dkmh", "WORD"),  # 1/10 km/h
    0x0080: ("odometer_dkm", "DWORD"),  # 1/10 km
    0x0081: ("province", "WORD"),
    0x0082: ("city", "WORD"),
    0x0083: ("plate", "STRING"),
    0x0084: ("plate_color", "BYTE"),
}
PARAMETER_IDS: Mapping[str, int] = {name: pid for pid, (name, _) in PARAMETERS.items()}
_WIDTH = {"BYTE": 1, "WORD": 2, "DWORD": 4}
MAX_TEXT_BYTES = 1024  # JT/T 808-2019 §8.32: at most 1,024 bytes of GBK text


# --- value objects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextMessage:
    """0x8300. ``flags``: :data:`TEXT_EMERGENCY`, :data:`TEXT_DISPLAY`, :data:`TEXT_TTS`;
    ``text_type`` (2019 only): 1 notification, 2 service."""

    text: str
    flags: int = TEXT_DISPLAY
    text_type: int = 1


@dataclass(frozen=True, slots=True)
class AlarmConfirm:
    """0x8203: confirm ``alarm_types`` (table 50 bits) of the report ``alarm_serial``
    (0: every alarm of those types)."""

    alarm_types: int
    alarm_serial: int = 0


@dataclass(frozen=True, slots=True)
class LocateQuery:
    """0x8201 position query: the terminal answers with a 0x0201."""


@dataclass(frozen=True, slots=True)
class TemporaryTracking:
    """0x8202: report every ``interval_s`` for ``validity_s`` (interval 0 stops)."""

    interval_s: int
    validity_s: int


ParamValue: TypeAlias = int | str | bytes


@dataclass(frozen=True, slots=True)
class ParamsSet:
    """0x8103: ``params`` as (parameter id, value) pairs."""

    params: tuple[tuple[int, ParamValue], ...]


@dataclass(frozen=True, slots=True)
class ParamsQuery:
    """0x8106 (these ``ids``) or, with no ids, 0x8104 (every parameter)."""

    ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TerminalControl:
    """0x8105: ``command`` word (table 20, or a vendor's word) and its parameter text."""

    command: int
    parameters: str = ""


@dataclass(frozen=True, slots=True)
class LocateReply:
    """0x0201: the answer to a 0x8201 (``reply_serial``) with the position now."""

    reply_serial: int
    location: Location


@dataclass(frozen=True, slots=True)
class ParamsReply:
    """0x0104: the answer to a 0x8104/0x8106 (``reply_serial``)."""

    reply_serial: int
    params: tuple[tuple[int, ParamValue], ...]

    def named(self) -> dict[str, ParamValue]:
        """The parameters by name (``speed_limit_kmh``...), unknown ids as ``0xNNNN``."""
        out: dict[str, ParamValue] = {}
        for pid, value in self.params:
            name = PARAMETERS.get(pid, (f"0x{pid:04X}", ""))[0]
            out[name] = value.hex() if isinstance(value, bytes) else value
        return out


Downlink: TypeAlias = (
    TextMessage
    | AlarmConfirm
    | LocateQuery
    | TemporaryTracking
    | ParamsSet
    | ParamsQuery
    | TerminalControl
)
Uplink: TypeAlias = LocateReply | ParamsReply


# --- helpers -----------------------------------------------------------------------------------


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _u32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "big")


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise FrameError("body", f"{what} needs {n} bytes, body has {len(body)}")


def _gbk(b: bytes) -> str:
    try:
        return b.rstrip(b"\x00").decode("gbk")
    except UnicodeDecodeError as exc:
        raise FrameError("body", f"text is not GBK: {exc}") from exc


def parameter_value(pid: int, value: ParamValue) -> bytes:
    """One parameter value as its bytes (type from :data:`PARAMETERS`); raises
    :class:`Misuse` for a value that does not fit."""
    kind = PARAMETERS.get(pid, ("", "RAW"))[1]
    if isinstance(value, bytes):
        return value
    if kind == "STRING":
        if not isinstance(value, str):
            raise Misuse(f"parameter 0x{pid:04X} is a string, got {value!r}")
        return value.encode("gbk")
    if kind in _WIDTH:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Misuse(f"parameter 0x{pid:04X} is a {kind}, got {value!r}")
        if not 0 <= value < 1 << (8 * _WIDTH[kind]):
            raise Misuse(f"parameter 0x{pid:04X} ({kind}) out of range: {value}")
        return value.to_bytes(_WIDTH[kind], "big")
    raise Misuse(f"parameter 0x{pid:04X} is not in the table: give its value as bytes")


def _typed(pid: int, raw: bytes) -> ParamValue:
    kind = PARAMETERS.get(pid, ("", "RAW"))[1]
    if kind == "STRING":
        return _gbk(raw)
    if kind in _WIDTH and len(raw) == _WIDTH[kind]:
        return int.from_bytes(raw, "big")
    return raw  # unknown id, or a terminal that sent another width: keep what it said


def _encode_items(params: tuple[tuple[int, ParamValue], ...]) -> bytes:
    if len(params) > 255:
        raise Misuse("at most 255 parameters in one message (count is a BYTE)")
    out = bytearray([len(params)])
    for pid, value in params:
        v = parameter_value(pid, value)
        if len(v) > 255:
            raise Misuse(f"parameter 0x{pid:04X} value longer than 255 bytes")
        out += pid.to_bytes(4, "big") + bytes([len(v)]) + v
    return bytes(out)


def _decode_items(body: bytes, start: int, what: str) -> tuple[tuple[int, ParamValue], ...]:
    _need(body, start + 1, what)
    count = body[start]
    i = start + 1
    items: list[tuple[int, ParamValue]] = []
    for k in range(count):
        if i + 5 > len(body):
            raise FrameError("body", f"{what} ends after {k} of {count} parameters")
        pid, ln = _u32(body, i), body[i + 4]
        if i + 5 + ln > len(body):
            raise FrameError("body", f"{what}: parameter 0x{pid:04X} overruns the body")
        items.append((pid, _typed(pid, body[i + 5 : i + 5 + ln])))
        i += 5 + ln
    return tuple(items)


# --- encode / decode ---------------------------------------------------------------------------


def encode_downlink(msg: Downlink, *, version: int = 2013) -> tuple[int, bytes]:
    """A command → ``(msg_id, body)`` in the ``version`` (2011/2013/2019) layout."""
    if isinstance(msg, TextMessage):
        text = msg.text.encode("gbk")
        if len(text) > MAX_TEXT_BYTES:
            raise Misuse(f"text is {len(text)} bytes in GBK, at most {MAX_TEXT_BYTES}")
        head = bytes([msg.flags & 0xFF])
        if version == 2019:
            head += bytes([msg.text_type])
        return MSG_TEXT, head + text
    if isinstance(msg, AlarmConfirm):
        return MSG_CONFIRM_ALARM, msg.alarm_serial.to_bytes(2, "big") + msg.alarm_types.to_bytes(
            4, "big"
        )
    if isinstance(msg, LocateQuery):
        return MSG_LOCATE, b""
    if isinstance(msg, TemporaryTracking):
        if not (0 <= msg.interval_s <= 0xFFFF and 0 <= msg.validity_s <= 0xFFFFFFFF):
            raise Misuse("tracking interval is a WORD and validity a DWORD, in seconds")
        return MSG_TRACK, msg.interval_s.to_bytes(2, "big") + msg.validity_s.to_bytes(4, "big")
    if isinstance(msg, ParamsSet):
        if not msg.params:
            raise Misuse("0x8103 needs at least one parameter")
        return MSG_PARAMS_SET, _encode_items(msg.params)
    if isinstance(msg, ParamsQuery):
        if not msg.ids:
            return MSG_PARAMS_QUERY_ALL, b""
        if len(msg.ids) > 255:
            raise Misuse("at most 255 parameter ids in one 0x8106")
        return MSG_PARAMS_QUERY, bytes([len(msg.ids)]) + b"".join(
            pid.to_bytes(4, "big") for pid in msg.ids
        )
    if isinstance(msg, TerminalControl):
        if not 0 <= msg.command <= 0xFF:
            raise Misuse(f"a 0x8105 command word is a BYTE, got {msg.command}")
        return MSG_CONTROL, bytes([msg.command]) + msg.parameters.encode("gbk")
    raise Misuse(f"not a downlink message: {type(msg).__name__}")


def encode_downlink_frame(msg: Downlink, *, phone: str, serial: int, version: int = 2013) -> bytes:
    """One whole frame (7E … 7E) of a command to ``phone``."""
    msg_id, body = encode_downlink(msg, version=version)
    return build_frame(msg_id, body, phone=phone, serial=serial, version=version)


def decode_downlink(msg_id: int, body: bytes, *, version: int = 2013) -> Downlink:
    """A command's body → its value object (for the simulator and ``fleetwatch decode``)."""
    if msg_id == MSG_TEXT:
        if version == 2019:
            _need(body, 2, "text message (2019)")
            return TextMessage(_gbk(body[2:]), body[0], body[1])
        _need(body, 1, "text message")
        return TextMessage(_gbk(body[1:]), body[0])
    if msg_id == MSG_CONFIRM_ALARM:
        _need(body, 6, "alarm confirmation")
        return AlarmConfirm(_u32(body, 2), _u16(body, 0))
    if msg_id == MSG_LOCATE:
        return LocateQuery()
    if msg_id == MSG_TRACK:
        _need(body, 6, "temporary tracking")
        return TemporaryTracking(_u16(body, 0), _u32(body, 2))
    if msg_id == MSG_PARAMS_SET:
        return ParamsSet(_decode_items(body, 0, "set parameters"))
    if msg_id == MSG_PARAMS_QUERY_ALL:
        return ParamsQuery()
    if msg_id == MSG_PARAMS_QUERY:
        _need(body, 1, "query parameters")
        n = body[0]
        _need(body, 1 + 4 * n, "query parameters")
        return ParamsQuery(tuple(_u32(body, 1 + 4 * k) for k in range(n)))
    if msg_id == MSG_CONTROL:
        _need(body, 1, "terminal control")
        return TerminalControl(body[0], _gbk(body[1:]))
    raise FrameError("msg_id", f"0x{msg_id:04X} is not a downlink message")


def encode_uplink_reply(msg: Uplink, *, version: int = 2013) -> tuple[int, bytes]:
    """A terminal's specific reply → ``(msg_id, body)``."""
    if isinstance(msg, LocateReply):
        _, loc = encode_body(msg.location, version=version)
        return MSG_LOCATE_REPLY, msg.reply_serial.to_bytes(2, "big") + loc
    if isinstance(msg, ParamsReply):
        return MSG_PARAMS_REPLY, msg.reply_serial.to_bytes(2, "big") + _encode_items(msg.params)
    raise Misuse(f"not a terminal reply: {type(msg).__name__}")


def decode_uplink_reply(msg_id: int, body: bytes) -> Uplink:
    """0x0201 or 0x0104 body → :class:`LocateReply` / :class:`ParamsReply`."""
    if msg_id == MSG_LOCATE_REPLY:
        _need(body, 2, "location query reply")
        return LocateReply(_u16(body, 0), decode_location(body[2:]))
    if msg_id == MSG_PARAMS_REPLY:
        _need(body, 2, "parameters reply")
        return ParamsReply(_u16(body, 0), _decode_items(body, 2, "parameters reply"))
    raise FrameError("msg_id", f"0x{msg_id:04X} is not a specific terminal reply")
