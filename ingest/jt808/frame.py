"""JT/T 808 message header and frame: parse and build (JT/T 808-2019 §4.4–4.5).

Header layout (unescaped)::

    2013/2011: msg_id(2) props(2) phone BCD(6)                 serial(2) [total(2) index(2)]
    2019:      msg_id(2) props(2) version(1) phone BCD(10)     serial(2) [total(2) index(2)]

``props``: bits 0–9 body length, 10–12 encryption (bit 10 = RSA), 13 split
(sub-package), 14 version flag (2019), 15 reserved. The 2011 and 2013 headers
are identical, so a frame without bit 14 reports ``version == 2013``.

Quirks of real devices that a *lenient* terminal may get away with (strict
decoding rejects them with the reason in brackets): a wrong checksum
[``checksum``], a raw 0x7D not escaped [``escape``], bit 14 set on a 2013
header [``body_length``]. Accepted quirks are listed in :attr:`Frame.quirks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fleet.errors import FrameError, Misuse
from ingest.jt808.framing import checksum, escape, unescape

__all__ = [
    "MAX_BODY",
    "Frame",
    "Header",
    "Lenient",
    "build_frame",
    "lenient_for",
    "parse_frame",
    "phone_bcd",
]

MAX_BODY = 0x3FF  # 10-bit body length field
MIN_FRAME = 13  # 2013 header (12) + checksum (1)

Lenient = Callable[[str], bool] | bool | None


def lenient_for(lenient: Lenient, phone: str) -> bool:
    """Whether the terminal ``phone`` is decoded leniently under ``lenient``."""
    if lenient is None or lenient is False:
        return False
    if lenient is True:
        return True
    return bool(lenient(phone))


@dataclass(frozen=True, slots=True)
class Header:
    msg_id: int
    phone: str  # BCD digits as sent: 12 (2011/2013) or 20 (2019)
    serial: int
    version: int = 2013  # 2013 (also 2011 frames) or 2019
    proto_version: int = 0  # the 2019 header's version byte (1 for JT/T 808-2019)
    encryption: int = 0
    body_length: int = 0
    split: tuple[int, int] | None = None  # (total packages, index from 1)

    @property
    def length(self) -> int:
        """Header length in bytes."""
        return (17 if self.version == 2019 else 12) + (4 if self.split else 0)


@dataclass(frozen=True, slots=True)
class Frame:
    """An unescaped, checked frame: header and body bytes."""

    header: Header
    body: bytes
    quirks: tuple[str, ...] = ()


def _parse_header(data: bytes, v2019: bool) -> Header:
    props = data[2] << 8 | data[3]
    split = bool(props & 0x2000)
    if v2019:
        base = 17
        proto = data[4]
        phone = data[5:15].hex()
    else:
        base = 12
        proto = 0
        phone = data[4:10].hex()
    need = base + (4 if split else 0)
    if len(data) < need + 1:
        raise FrameError("too_short", f"{len(data)} bytes, the header alone needs {need + 1}")
    parts = None
    if split:
        total = data[base] << 8 | data[base + 1]
        index = data[base + 2] << 8 | data[base + 3]
        parts = (total, index)
    return Header(
        msg_id=data[0] << 8 | data[1],
        phone=phone,
        serial=data[base - 2] << 8 | data[base - 1],
        version=2019 if v2019 else 2013,
        proto_version=proto,
        encryption=props >> 10 & 0x7,
        body_length=props & MAX_BODY,
        split=parts,
    )


def parse_frame(raw: bytes, *, lenient: Lenient = None) -> Frame:
    """Unescape and check one frame (with or without its 7E delimiters).

    ``lenient`` is a bool or a function of the phone number. Raises
    :class:`~fleet.errors.FrameError` with reasons ``escape``,
    ``too_short``, ``body_length``, ``checksum``, ``encrypted``, ``split``.
    """
    inner = raw[1:-1] if len(raw) >= 2 and raw[0] == 0x7E and raw[-1] == 0x7E else raw
    if b"\x7e" in inner:
        raise FrameError("delimiter", "0x7E inside a frame")
    quirks: list[str] = []
    escape_error: FrameError | None = None
    try:
        data = unescape(inner)
    except FrameError as exc:
        escape_error = exc
        data = unescape(inner, lenient=True)
    if len(data) < MIN_FRAME:
        raise escape_error or FrameError("too_short", f"{len(data)} bytes, at least 13 needed")
    v2019 = bool(data[2] & 0x40)
    try:
        header = _parse_header(data, v2019)
    except FrameError:
        if not v2019:
            raise
        header = _parse_header(data, False)  # maybe the version-flag quirk; checked below
        expected = -1
    else:
        expected = header.length + header.body_length + 1
    tolerant = lenient_for(lenient, header.phone)
    if expected != len(data) and v2019:
        # Quirk: bit 14 set on a 2013 header. Only for terminals configured lenient.
        alt = _parse_header(data, False)
        if alt.length + alt.body_length + 1 == len(data) and lenient_for(lenient, alt.phone):
            header, tolerant, expected = alt, True, len(data)
            quirks.append("version_flag")
        elif expected < 0:
            raise FrameError("too_short", f"{len(data)} bytes, a 2019 header needs 18")
    if escape_error is not None:
        if not tolerant:
            raise escape_error
        quirks.append("escape")
    if expected != len(data):
        raise FrameError(
            "body_length",
            f"header says {header.body_length} body bytes, frame has "
            f"{len(data) - header.length - 1}",
        )
    got = checksum(data[:-1])
    if got != data[-1]:
        if not tolerant:
            raise FrameError("checksum", f"computed 0x{got:02X}, frame says 0x{data[-1]:02X}")
        quirks.append("checksum")
    if header.encryption:
        raise FrameError("encrypted", f"encryption mode {header.encryption} is not supported")
    if header.split is not None:
        total, index = header.split
        if total < 2 or not 1 <= index <= total:
            raise FrameError("split", f"sub-package {index} of {total}")
    return Frame(header, data[header.length : -1], tuple(quirks))


def phone_bcd(phone: str, version: int) -> bytes:
    """The BCD bytes of a phone number, left-padded with zeros (6 or 10 bytes)."""
    width = 20 if version == 2019 else 12
    if not phone.isdigit() or len(phone) > width:
        raise Misuse(f"phone must be at most {width} decimal digits, got {phone!r}")
    return bytes.fromhex(phone.rjust(width, "0"))


def build_frame(
    msg_id: int,
    body: bytes,
    *,
    phone: str,
    serial: int,
    version: int = 2013,
    split: tuple[int, int] | None = None,
    proto_version: int = 1,
) -> bytes:
    """Header + body → an escaped, checksummed frame with both delimiters."""
    if len(body) > MAX_BODY:
        raise Misuse(f"body of {len(body)} bytes exceeds {MAX_BODY}; use encode_split")
    if not 0 <= serial <= 0xFFFF or not 0 <= msg_id <= 0xFFFF:
        raise Misuse("msg_id and serial are 16-bit unsigned")
    props = len(body)
    if split is not None:
        props |= 0x2000
    head = bytearray(msg_id.to_bytes(2, "big"))
    if version == 2019:
        props |= 0x4000
        head += props.to_bytes(2, "big") + bytes([proto_version]) + phone_bcd(phone, 2019)
    else:
        head += props.to_bytes(2, "big") + phone_bcd(phone, 2013)
    head += serial.to_bytes(2, "big")
    if split is not None:
        head += split[0].to_bytes(2, "big") + split[1].to_bytes(2, "big")
    data = bytes(head) + body
    return b"\x7e" + escape(data + bytes([checksum(data)])) + b"\x7e"
