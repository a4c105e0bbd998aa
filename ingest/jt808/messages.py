"""JT/T 808 message bodies: value objects, decoders and encoders.

Messages covered (JT/T 808-2019 chapter 8): 0x0001/0x8001 general replies,
0x0002 heartbeat, 0x0003 logout, 0x0100 registration, 0x8100 registration
reply, 0x0102 authentication, 0x0200 location report, 0x0704 location batch,
0x0702 driver identity report (驾驶员身份信息采集上报, the driver's IC card).
Anything else decodes to :class:`RawMessage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from fleet.errors import FrameError, Misuse
from ingest.jt808.bits import STATUS_SOUTH, STATUS_WEST

__all__ = [
    "FIXED_ITEM_LENGTHS",
    "Authentication",
    "DriverIdentity",
    "Heartbeat",
    "Location",
    "LocationBatch",
    "Logout",
    "Message",
    "PlatformReply",
    "RawMessage",
    "Registration",
    "RegistrationReply",
    "SplitPart",
    "TerminalReply",
    "bcd_time_to_ms",
    "decode_body",
    "decode_location",
    "encode_body",
    "ms_to_bcd_time",
]

MSG_TERMINAL_REPLY = 0x0001
MSG_HEARTBEAT = 0x0002
MSG_LOGOUT = 0x0003
MSG_REGISTRATION = 0x0100
MSG_AUTHENTICATION = 0x0102
MSG_LOCATION = 0x0200
MSG_LOCATION_BATCH = 0x0704
MSG_DRIVER_IDENTITY = 0x0702
MSG_PLATFORM_REPLY = 0x8001
MSG_REGISTRATION_REPLY = 0x8100

LOCATION_BLOCK = 28  # alarm(4) status(4) lat(4) lon(4) alt(2) speed(2) heading(2) time(6)

# Additional items with a fixed length (JT/T 808-2019 table 27); 0x11 is 1 or 5.
FIXED_ITEM_LENGTHS: dict[int, int] = {
    0x01: 4,  # mileage, 1/10 km
    0x02: 2,  # fuel, 1/10 L
    0x03: 2,  # recorder (tachograph) speed, 1/10 km/h
    0x12: 6,  # area/route in-out alarm
    0x25: 4,  # extended vehicle status
    0x2A: 2,  # IO status
    0x30: 1,  # wireless signal strength
    0x31: 1,  # GNSS satellites in use
}

_GMT8_S = 8 * 3600


# --- time --------------------------------------------------------------------------------------


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _month_days(y: int, m: int) -> int:
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return 29 if m == 2 and leap else _MONTH_DAYS[m - 1]


def bcd_time_to_ms(b: bytes) -> int:
    """6-byte BCD ``YYMMDDhhmmss`` on the terminal's GMT+8 clock → epoch ms UTC."""
    v = []
    for x in b:
        hi, lo = x >> 4, x & 0xF
        if hi > 9 or lo > 9:
            raise FrameError("time", f"time {b.hex()} is not BCD")
        v.append(hi * 10 + lo)
    yy, mo, dd, hh, mi, ss = v
    year = 2000 + yy
    if not (1 <= mo <= 12 and 1 <= dd <= _month_days(year, mo) and hh < 24 and mi < 60 and ss < 60):
        raise FrameError("time", f"time {b.hex()} is not a valid date")
    secs = _days_from_civil(year, mo, dd) * 86400 + hh * 3600 + mi * 60 + ss - _GMT8_S
    return secs * 1000


def ms_to_bcd_time(ms: int) -> bytes:
    """Epoch ms UTC → 6-byte BCD GMT+8 time (milliseconds dropped)."""
    secs = ms // 1000 + _GMT8_S
    days, rem = divmod(secs, 86400)
    # civil_from_days (inverse of _days_from_civil)
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    y = yoe + era * 400 + (m <= 2)
    if not 2000 <= y <= 2099:
        raise Misuse(f"JT/T 808 time covers 2000–2099, got year {y}")
    fields = (y - 2000, m, d, rem // 3600, rem // 60 % 60, rem % 60)
    return bytes((f // 10) << 4 | f % 10 for f in fields)


# --- value objects -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """One 0x0200 position (also one item of 0x0704).

    ``lat``/``lon`` are signed degrees: the status south/west bits (2, 3) give
    the sign. ``extra`` keeps unknown and vendor additional items raw.
    """

    lat: float
    lon: float
    time_ms: int
    speed_kmh: float = 0.0
    heading: int = 0
    alt_m: int = 0
    alarm: int = 0
    status: int = 0
    mileage_km: float | None = None  # item 0x01
    fuel_l: float | None = None  # item 0x02
    recorder_speed_kmh: float | None = None  # item 0x03
    overspeed: tuple[int, int] | None = None  # item 0x11: (location type, area/route id)
    area_alarm: tuple[int, int, int] | None = None  # item 0x12: (type, id, 0 in / 1 out)
    ext_status: int | None = None  # item 0x25
    io_status: int | None = None  # item 0x2A
    signal: int | None = None  # item 0x30
    satellites: int | None = None  # item 0x31
    extra: tuple[tuple[int, bytes], ...] = ()

    @property
    def acc(self) -> bool:
        return bool(self.status & 1)


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """0x0704: positions uploaded together; ``batch_type`` 1 is a blind-area back-fill."""

    batch_type: int
    locations: tuple[Location, ...]

    @property
    def backfill(self) -> bool:
        return self.batch_type == 1


#: 0x0702 IC card read results (JT/T 808-2013 table 78 / 2019 table 87).
CARD_READ_RESULTS: dict[int, str] = {
    0: "ok",
    1: "key_auth_failed",  # 卡片密钥认证未通过
    2: "card_locked",  # 卡片已被锁定
    3: "card_pulled",  # 卡片被拔出
    4: "checksum_error",  # 数据校验错误
}
CARD_INSERTED = 0x01  # 从业资格证 IC 卡插入 (驾驶员上班)
CARD_REMOVED = 0x02  # 从业资格证 IC 卡拔出 (驾驶员下班)


@dataclass(frozen=True, slots=True)
class DriverIdentity:
    """0x0702 driver identity report (2013 and 2019 layouts).

    ``status`` 1: the qualification card (从业资格证 IC 卡) went in, 2: it came out;
    ``time_ms`` when. Only an inserted card has ``read_result`` (0 = read); only a card
    read has the rest: ``name``, ``certificate`` (从业资格证编码, 20 bytes), ``issuer``
    (发证机构名称), ``valid_until`` (证件有效期, ``YYYY-MM-DD``) and, in the 2019
    layout, ``id_number`` (驾驶员身份证号, 20 bytes)."""

    status: int
    time_ms: int
    read_result: int | None = None
    name: str | None = None
    certificate: str | None = None
    issuer: str | None = None
    valid_until: str | None = None
    id_number: str | None = None

    @property
    def inserted(self) -> bool:
        return self.status == CARD_INSERTED

    @property
    def driver_key(self) -> str | None:
        """Who is driving, as far as the card says: the certificate number of a card that
        was read, None when the card came out or could not be read."""
        if self.inserted and self.read_result == 0 and self.certificate:
            return self.certificate
        return None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class Registration:
    """0x0100. ``layout`` is the edition of the body: 2011, 2013 or 2019."""

    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str
    layout: int = 2013


@dataclass(frozen=True, slots=True)
class Authentication:
    """0x0102. 2019 adds the IMEI and the software version."""

    code: str
    imei: str | None = None
    software_version: str | None = None


@dataclass(frozen=True, slots=True)
class TerminalReply:
    """0x0001 terminal general reply."""

    reply_serial: int
    reply_msg_id: int
    result: int = 0


@dataclass(frozen=True, slots=True)
class PlatformReply:
    """0x8001 platform general reply. ``result``: 0 ok, 1 failed, 2 bad message,
    3 unsupported, 4 alarm acknowledged."""

    reply_serial: int
    reply_msg_id: int
    result: int = 0


@dataclass(frozen=True, slots=True)
class RegistrationReply:
    """0x8100. ``result`` 0 ok (then ``auth_code`` is set), 1 vehicle already
    registered, 2 unknown vehicle, 3 terminal already registered, 4 unknown terminal."""

    reply_serial: int
    result: int
    auth_code: str = ""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """Any other message id, body kept as bytes."""

    msg_id: int
    body: bytes


@dataclass(frozen=True, slots=True)
class SplitPart:
    """One sub-package of a split message; see :class:`~ingest.jt808.reassembly.Reassembler`."""

    msg_id: int
    total: int
    index: int
    data: bytes


Message: TypeAlias = (
    Location
    | LocationBatch
    | Heartbeat
    | Logout
    | Registration
    | Authentication
    | TerminalReply
    | PlatformReply
    | RegistrationReply
    | DriverIdentity
    | RawMessage
    | SplitPart
)

MESSAGE_IDS: dict[type, int] = {
    TerminalReply: MSG_TERMINAL_REPLY,
    Heartbeat: MSG_HEARTBEAT,
    Logout: MSG_LOGOUT,
    Registration: MSG_REGISTRATION,
    Authentication: MSG_AUTHENTICATION,
    Location: MSG_LOCATION,
    LocationBatch: MSG_LOCATION_BATCH,
    PlatformReply: MSG_PLATFORM_REPLY,
    RegistrationReply: MSG_REGISTRATION_REPLY,
    DriverIdentity: MSG_DRIVER_IDENTITY,
}


# --- decoding ----------------------------------------------------------------------------------


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _u32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "big")


def _text(b: bytes) -> str:
    return b.strip(b"\x00 ").decode("gbk", errors="replace")


def _need(body: bytes, n: int, what: str) -> None:
    if len(body) < n:
        raise FrameError("body", f"{what} needs {n} bytes, body has {len(body)}")


def decode_location(body: bytes, *, lenient: bool = False) -> Location:
    """Decode a 0x0200 body (28-byte block plus additional items)."""
    _need(body, LOCATION_BLOCK, "location")
    status = _u32(body, 4)
    lat = _u32(body, 8) / 1e6
    lon = _u32(body, 12) / 1e6
    if status & STATUS_SOUTH:
        lat = -lat
    if status & STATUS_WEST:
        lon = -lon
    alt = _u16(body, 16)
    fields: dict[str, object] = {}
    extra: list[tuple[int, bytes]] = []
    i, n = LOCATION_BLOCK, len(body)
    while i < n:
        if i + 2 > n:
            if lenient:
                break
            raise FrameError("item", f"truncated additional item header at offset {i}")
        item, ln = body[i], body[i + 1]
        j = i + 2 + ln
        if j > n:
            if lenient:
                break
            raise FrameError("item", f"item 0x{item:02X} of {ln} bytes overruns the body")
        v = body[i + 2 : j]
        want = FIXED_ITEM_LENGTHS.get(item)
        if (want is not None and ln != want) or (item == 0x11 and ln not in (1, 5)):
            if not lenient:
                raise FrameError("item", f"item 0x{item:02X} has {ln} bytes")
            extra.append((item, v))
        elif item == 0x01:
            fields["mileage_km"] = _u32(v, 0) / 10
        elif item == 0x02:
            fields["fuel_l"] = _u16(v, 0) / 10
        elif item == 0x03:
            fields["recorder_speed_kmh"] = _u16(v, 0) / 10
        elif item == 0x11:
            fields["overspeed"] = (v[0], _u32(v, 1) if ln == 5 else 0)
        elif item == 0x12:
            fields["area_alarm"] = (v[0], _u32(v, 1), v[5])
        elif item == 0x25:
            fields["ext_status"] = _u32(v, 0)
        elif item == 0x2A:
            fields["io_status"] = _u16(v, 0)
        elif item == 0x30:
            fields["signal"] = v[0]
        elif item == 0x31:
            fields["satellites"] = v[0]
        else:
            extra.append((item, v))
        i = j
    return Location(
        lat=lat,
        lon=lon,
        time_ms=bcd_time_to_ms(body[22:28]),
        speed_kmh=_u16(body, 18) / 10,
        heading=_u16(body, 20),
        alt_m=alt - 0x10000 if alt >= 0x8000 else alt,  # some terminals send negative altitudes
        alarm=_u32(body, 0),
        status=status,
        extra=tuple(extra),
        **fields,  # type: ignore[arg-type]
    )


def _decode_batch(body: bytes, lenient: bool) -> LocationBatch:
    _need(body, 3, "location batch")
    count, kind = _u16(body, 0), body[2]
    locs: list[Location] = []
    i = 3
    for k in range(count):
        if i + 2 > len(body):
            raise FrameError("body", f"location batch ends after {k} of {count} items")
        ln = _u16(body, i)
        if i + 2 + ln > len(body):
            raise FrameError("body", f"location batch item {k} of {ln} bytes overruns the body")
        locs.append(decode_location(body[i + 2 : i + 2 + ln], lenient=lenient))
        i += 2 + ln
    if i != len(body) and not lenient:
        raise FrameError("body", f"{len(body) - i} bytes after the {count} batch items")
    return LocationBatch(kind, tuple(locs))


_REG_LAYOUTS = {2011: (5, 8, 7), 2013: (5, 20, 7), 2019: (11, 30, 30)}


def _decode_registration(body: bytes, version: int) -> Registration:
    # 2011 and 2013 share the header; tell them apart by the body length.
    layout = 2019 if version == 2019 else (2013 if len(body) >= 37 else 2011)
    a, b, c = _REG_LAYOUTS[layout]
    fixed = 4 + a + b + c + 1
    _need(body, fixed, f"registration ({layout} layout)")
    i = 4
    manufacturer = _text(body[i : i + a])
    i += a
    model = _text(body[i : i + b])
    i += b
    terminal_id = _text(body[i : i + c])
    i += c
    return Registration(
        province=_u16(body, 0),
        city=_u16(body, 2),
        manufacturer=manufacturer,
        model=model,
        terminal_id=terminal_id,
        plate_color=body[i],
        plate=_text(body[i + 1 :]),
        layout=layout,
    )


def _decode_authentication(body: bytes, version: int) -> Authentication:
    if version != 2019:
        return Authentication(_text(body))
    _need(body, 1, "authentication")
    n = body[0]
    _need(body, 1 + n + 15 + 20, "authentication (2019)")
    return Authentication(
        code=_text(body[1 : 1 + n]),
        imei=_text(body[1 + n : 16 + n]),
        software_version=_text(body[16 + n : 36 + n]),
    )


def _bcd_date(b: bytes) -> str:
    """4-byte BCD ``YYYYMMDD`` → ``"YYYY-MM-DD"`` (checked)."""
    digits = "".join(f"{x >> 4}{x & 0xF}" for x in b)
    if any(x >> 4 > 9 or x & 0xF > 9 for x in b):
        raise FrameError("body", f"validity date {b.hex()} is not BCD")
    y, m, d = int(digits[:4]), int(digits[4:6]), int(digits[6:])
    if not (1 <= m <= 12 and 1 <= d <= _month_days(y, m)):
        raise FrameError("body", f"validity date {digits} is not a date")
    return f"{y:04d}-{m:02d}-{d:02d}"


def _decode_driver(body: bytes, version: int) -> DriverIdentity:
    _need(body, 7, "driver identity")
    status = body[0]
    if status not in (CARD_INSERTED, CARD_REMOVED):
        raise FrameError("body", f"driver identity status {status} is not 1 (in) or 2 (out)")
    time_ms = bcd_time_to_ms(body[1:7])
    if status == CARD_REMOVED:
        return DriverIdentity(status, time_ms)
    _need(body, 8, "driver identity (card inserted)")
    result = body[7]
    if result != 0:
        return DriverIdentity(status, time_ms, result)
    i = 8
    _need(body, i + 1, "driver identity (name length)")
    n = body[i]
    i += 1
    _need(body, i + n + 20 + 1, "driver identity (name, certificate)")
    name = _text(body[i : i + n])
    i += n
    cert = _text(body[i : i + 20])
    i += 20
    m = body[i]
    i += 1
    _need(body, i + m + 4, "driver identity (issuer, validity)")
    issuer = _text(body[i : i + m])
    i += m
    valid = _bcd_date(body[i : i + 4])
    i += 4
    id_number = None
    if version == 2019:
        _need(body, i + 20, "driver identity (2019: ID number)")
        id_number = _text(body[i : i + 20])
    return DriverIdentity(status, time_ms, 0, name, cert, issuer, valid, id_number)


def decode_body(msg_id: int, body: bytes, *, version: int = 2013, lenient: bool = False) -> Message:
    """Decode the body of a (complete, non-split) message."""
    if msg_id == MSG_LOCATION:
        return decode_location(body, lenient=lenient)
    if msg_id == MSG_LOCATION_BATCH:
        return _decode_batch(body, lenient)
    if msg_id == MSG_HEARTBEAT:
        return Heartbeat()
    if msg_id == MSG_LOGOUT:
        return Logout()
    if msg_id == MSG_REGISTRATION:
        return _decode_registration(body, version)
    if msg_id == MSG_AUTHENTICATION:
        return _decode_authentication(body, version)
    if msg_id in (MSG_PLATFORM_REPLY, MSG_TERMINAL_REPLY):
        _need(body, 5, "general reply")
        cls = PlatformReply if msg_id == MSG_PLATFORM_REPLY else TerminalReply
        return cls(_u16(body, 0), _u16(body, 2), body[4])
    if msg_id == MSG_DRIVER_IDENTITY:
        return _decode_driver(body, version)
    if msg_id == MSG_REGISTRATION_REPLY:
        _need(body, 3, "registration reply")
        return RegistrationReply(_u16(body, 0), body[2], _text(body[3:]))
    return RawMessage(msg_id, body)


# --- encoding ----------------------------------------------------------------------------------


def _fixed_text(s: str, n: int, what: str) -> bytes:
    b = s.encode("gbk")
    if len(b) > n:
        raise Misuse(f"{what} {s!r} is longer than {n} bytes")
    return b.ljust(n, b"\x00")


def _encode_location(loc: Location) -> bytes:
    status = loc.status & ~(STATUS_SOUTH | STATUS_WEST)
    if loc.lat < 0:
        status |= STATUS_SOUTH
    if loc.lon < 0:
        status |= STATUS_WEST
    out = bytearray()
    out += loc.alarm.to_bytes(4, "big") + status.to_bytes(4, "big")
    out += round(abs(loc.lat) * 1e6).to_bytes(4, "big")
    out += round(abs(loc.lon) * 1e6).to_bytes(4, "big")
    out += (loc.alt_m & 0xFFFF).to_bytes(2, "big")
    out += round(loc.speed_kmh * 10).to_bytes(2, "big")
    out += loc.heading.to_bytes(2, "big")
    out += ms_to_bcd_time(loc.time_ms)

    def item(item_id: int, value: bytes) -> None:
        out.append(item_id)
        out.append(len(value))
        out.extend(value)

    if loc.mileage_km is not None:
        item(0x01, round(loc.mileage_km * 10).to_bytes(4, "big"))
    if loc.fuel_l is not None:
        item(0x02, round(loc.fuel_l * 10).to_bytes(2, "big"))
    if loc.recorder_speed_kmh is not None:
        item(0x03, round(loc.recorder_speed_kmh * 10).to_bytes(2, "big"))
    if loc.overspeed is not None:
        kind, ident = loc.overspeed
        item(0x11, bytes([kind]) + (ident.to_bytes(4, "big") if kind else b""))
    if loc.area_alarm is not None:
        kind, ident, direction = loc.area_alarm
        item(0x12, bytes([kind]) + ident.to_bytes(4, "big") + bytes([direction]))
    if loc.ext_status is not None:
        item(0x25, loc.ext_status.to_bytes(4, "big"))
    if loc.io_status is not None:
        item(0x2A, loc.io_status.to_bytes(2, "big"))
    if loc.signal is not None:
        item(0x30, bytes([loc.signal]))
    if loc.satellites is not None:
        item(0x31, bytes([loc.satellites]))
    for item_id, value in loc.extra:
        item(item_id, value)
    return bytes(out)


def _encode_driver(msg: DriverIdentity, version: int) -> bytes:
    out = bytes([msg.status]) + ms_to_bcd_time(msg.time_ms)
    if msg.status != CARD_INSERTED:
        return out
    out += bytes([msg.read_result or 0])
    if msg.read_result:
        return out
    name = (msg.name or "").encode("gbk")
    issuer = (msg.issuer or "").encode("gbk")
    if len(name) > 255 or len(issuer) > 255:
        raise Misuse("driver name and issuer are at most 255 bytes")
    y, m, d = (msg.valid_until or "2000-01-01").split("-")
    valid = bytes.fromhex(f"{int(y):04d}{int(m):02d}{int(d):02d}")
    out += bytes([len(name)]) + name + _fixed_text(msg.certificate or "", 20, "certificate")
    out += bytes([len(issuer)]) + issuer + valid
    if version == 2019:
        out += _fixed_text(msg.id_number or "", 20, "id_number")
    return out


def encode_body(msg: Message, *, version: int = 2013) -> tuple[int, bytes]:
    """A message → ``(msg_id, body)``. ``version`` picks the 2011/2013/2019 body layout."""
    if isinstance(msg, Location):
        return MSG_LOCATION, _encode_location(msg)
    if isinstance(msg, LocationBatch):
        out = bytearray(len(msg.locations).to_bytes(2, "big") + bytes([msg.batch_type]))
        for loc in msg.locations:
            body = _encode_location(loc)
            out += len(body).to_bytes(2, "big") + body
        return MSG_LOCATION_BATCH, bytes(out)
    if isinstance(msg, Heartbeat | Logout):
        return MESSAGE_IDS[type(msg)], b""
    if isinstance(msg, Registration):
        a, b, c = _REG_LAYOUTS[version]
        return MSG_REGISTRATION, (
            msg.province.to_bytes(2, "big")
            + msg.city.to_bytes(2, "big")
            + _fixed_text(msg.manufacturer, a, "manufacturer")
            + _fixed_text(msg.model, b, "model")
            + _fixed_text(msg.terminal_id, c, "terminal_id")
            + bytes([msg.plate_color])
            + msg.plate.encode("gbk")
        )
    if isinstance(msg, Authentication):
        code = msg.code.encode("gbk")
        if version != 2019:
            return MSG_AUTHENTICATION, code
        return MSG_AUTHENTICATION, (
            bytes([len(code)])
            + code
            + _fixed_text(msg.imei or "", 15, "imei")
            + _fixed_text(msg.software_version or "", 20, "software_version")
        )
    if isinstance(msg, TerminalReply | PlatformReply):
        return MESSAGE_IDS[type(msg)], (
            msg.reply_serial.to_bytes(2, "big")
            + msg.reply_msg_id.to_bytes(2, "big")
            + bytes([msg.result])
        )
    if isinstance(msg, RegistrationReply):
        code = msg.auth_code.encode("gbk") if msg.result == 0 else b""
        return MSG_REGISTRATION_REPLY, msg.reply_serial.to_bytes(2, "big") + bytes(
            [msg.result]
        ) + code
    if isinstance(msg, DriverIdentity):
        return MSG_DRIVER_IDENTITY, _encode_driver(msg, version)
    if isinstance(msg, RawMessage):
        return msg.msg_id, msg.body
    raise Misuse(f"cannot encode {type(msg).__name__} on its own; encode the whole message")
