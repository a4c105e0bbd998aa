"""Whole-frame decoding and encoding: bytes ⇄ (header, message).

Typical use::

    decoded = decode_frame(raw, lenient=cfg.is_lenient)
    decoded.header.phone, decoded.message          # Location, Heartbeat, ...

    frame = encode_location("13912344329", 7, lat=30.45, lon=106.63, speed_kmh=42.0,
                            heading=90, alt_m=300, time_ms=now_ms)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleet.errors import FrameError, Misuse
from ingest.jt808.frame import MAX_BODY, Header, Lenient, build_frame, lenient_for, parse_frame
from ingest.jt808.messages import (
    Authentication,
    Heartbeat,
    Location,
    LocationBatch,
    Logout,
    Message,
    PlatformReply,
    Registration,
    RegistrationReply,
    SplitPart,
    TerminalReply,
    decode_body,
    encode_body,
)

__all__ = [
    "Decoded",
    "decode_frame",
    "encode_authentication",
    "encode_heartbeat",
    "encode_location",
    "encode_location_batch",
    "encode_logout",
    "encode_message",
    "encode_platform_reply",
    "encode_registration",
    "encode_registration_reply",
    "encode_split",
    "encode_terminal_reply",
]


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded frame. ``quirks`` lists what lenient decoding let through."""

    header: Header
    message: Message
    quirks: tuple[str, ...] = ()


def decode_frame(raw: bytes, *, lenient: Lenient = None) -> Decoded:
    """Decode one frame (with or without its 7E delimiters).

    A sub-package of a split message decodes to :class:`SplitPart`; feed those
    to a :class:`~ingest.jt808.reassembly.Reassembler`. Raises
    :class:`~fleet.errors.FrameError` and nothing else.
    """
    frame = parse_frame(raw, lenient=lenient)
    h = frame.header
    if h.split is not None:
        return Decoded(h, SplitPart(h.msg_id, h.split[0], h.split[1], frame.body), frame.quirks)
    tolerant = bool(frame.quirks) or lenient_for(lenient, h.phone)
    try:
        msg = decode_body(h.msg_id, frame.body, version=h.version, lenient=tolerant)
    except FrameError as exc:
        exc.terminal = h.phone
        raise
    return Decoded(h, msg, frame.quirks)


def encode_message(msg: Message, *, phone: str, serial: int, version: int = 2013) -> bytes:
    """Encode any message object as one frame. ``version``: 2011, 2013 or 2019."""
    if version not in (2011, 2013, 2019):
        raise Misuse(f"version must be 2011, 2013 or 2019, got {version}")
    msg_id, body = encode_body(msg, version=version)
    return build_frame(msg_id, body, phone=phone, serial=serial, version=version)


def encode_split(
    msg: Message, *, phone: str, serial: int, version: int = 2013, max_body: int = MAX_BODY
) -> list[bytes]:
    """Encode a message as sub-packages of at most ``max_body`` body bytes each.

    Serial numbers run ``serial, serial + 1, ...`` (mod 65536), one per package.
    A body that fits in one package still gives one unsplit frame.
    """
    if not 1 <= max_body <= MAX_BODY:
        raise Misuse(f"max_body must be within 1..{MAX_BODY}")
    msg_id, body = encode_body(msg, version=version)
    if len(body) <= max_body:
        return [build_frame(msg_id, body, phone=phone, serial=serial, version=version)]
    chunks = [body[i : i + max_body] for i in range(0, len(body), max_body)]
    return [
        build_frame(
            msg_id,
            chunk,
            phone=phone,
            serial=(serial + k) & 0xFFFF,
            version=version,
            split=(len(chunks), k + 1),
        )
        for k, chunk in enumerate(chunks)
    ]


def encode_location(
    phone: str,
    serial: int,
    *,
    lat: float,
    lon: float,
    speed_kmh: float,
    heading: int,
    alt_m: int,
    time_ms: int,
    alarm: int = 0,
    status: int = 0,
    mileage_km: float | None = None,
    version: int = 2013,
    **items: object,
) -> bytes:
    """A 0x0200 location report. The south/west status bits follow the signs
    of ``lat``/``lon``. ``items``: further :class:`Location` fields
    (``fuel_l``, ``satellites``, ``extra``, ...)."""
    loc = Location(
        lat=lat,
        lon=lon,
        time_ms=time_ms,
        speed_kmh=speed_kmh,
        heading=heading,
        alt_m=alt_m,
        alarm=alarm,
        status=status,
        mileage_km=mileage_km,
        **items,  # type: ignore[arg-type]
    )
    return encode_message(loc, phone=phone, serial=serial, version=version)


def encode_location_batch(
    phone: str,
    serial: int,
    locations: Sequence[Location],
    *,
    backfill: bool = False,
    version: int = 2013,
) -> bytes:
    """A 0x0704 batch; ``backfill=True`` sends type 1 (blind-area upload)."""
    batch = LocationBatch(1 if backfill else 0, tuple(locations))
    return encode_message(batch, phone=phone, serial=serial, version=version)


def encode_heartbeat(phone: str, serial: int, *, version: int = 2013) -> bytes:
    return encode_message(Heartbeat(), phone=phone, serial=serial, version=version)


def encode_logout(phone: str, serial: int, *, version: int = 2013) -> bytes:
    return encode_message(Logout(), phone=phone, serial=serial, version=version)


def encode_registration(
    phone: str,
    serial: int,
    *,
    plate: str,
    plate_color: int = 1,
    province: int = 0,
    city: int = 0,
    manufacturer: str = "",
    model: str = "",
    terminal_id: str = "",
    version: int = 2013,
) -> bytes:
    reg = Registration(province, city, manufacturer, model, terminal_id, plate_color, plate)
    return encode_message(reg, phone=phone, serial=serial, version=version)


def encode_authentication(
    phone: str,
    serial: int,
    code: str,
    *,
    imei: str = "",
    software_version: str = "",
    version: int = 2013,
) -> bytes:
    auth = Authentication(code, imei or None, software_version or None)
    return encode_message(auth, phone=phone, serial=serial, version=version)


def encode_platform_reply(
    phone: str,
    serial: int,
    *,
    reply_serial: int,
    reply_msg_id: int,
    result: int = 0,
    version: int = 2013,
) -> bytes:
    """0x8001 platform general reply."""
    msg = PlatformReply(reply_serial, reply_msg_id, result)
    return encode_message(msg, phone=phone, serial=serial, version=version)


def encode_terminal_reply(
    phone: str,
    serial: int,
    *,
    reply_serial: int,
    reply_msg_id: int,
    result: int = 0,
    version: int = 2013,
) -> bytes:
    """0x0001 terminal general reply."""
    msg = TerminalReply(reply_serial, reply_msg_id, result)
    return encode_message(msg, phone=phone, serial=serial, version=version)


def encode_registration_reply(
    phone: str,
    serial: int,
    *,
    reply_serial: int,
    result: int = 0,
    auth_code: str = "",
    version: int = 2013,
) -> bytes:
    """0x8100 registration reply; ``auth_code`` is sent only when ``result`` is 0."""
    msg = RegistrationReply(reply_serial, result, auth_code)
    return encode_message(msg, phone=phone, serial=serial, version=version)
