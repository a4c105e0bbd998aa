"""``fleetwatch decode HEX...`` / ``fleetwatch decode -``: show what a captured frame says.

One JSON object per frame on standard output, with the keys of
``jt808_vectors.json``: ``valid, why_invalid, msg_id, version, phone, serial,
positions, batch_type`` and ``ack`` (the 0x8001/0x0001 reply fields, or null);
a platform command (0x8300, 0x8203, 0x8201, 0x8202, 0x8103, 0x8104, 0x8106,
0x8105) or a terminal's specific reply (0x0201, 0x0104) adds ``command``: its
kind and fields (a 0x0201's position also goes to ``positions``); a 0x0702 driver
identity report adds ``driver_card`` (status, time, read result, name, certificate,
issuer, validity, ID number).
``--verbose`` adds ``detail`` (why a frame is invalid), ``quirks`` (what
lenient decoding let through) and ``split`` ([total, index] of a sub-package).
Exit status 0 when every frame is valid, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from fleet.errors import FrameError
from ingest.jt808.codec import Decoded, decode_frame
from ingest.jt808.commands import to_wire
from ingest.jt808.downlink import (
    DOWNLINK_IDS,
    MSG_LOCATE_REPLY,
    MSG_PARAMS_REPLY,
    AlarmConfirm,
    Downlink,
    LocateQuery,
    LocateReply,
    ParamsQuery,
    ParamsSet,
    TemporaryTracking,
    TerminalControl,
    TextMessage,
    decode_downlink,
    decode_uplink_reply,
)
from ingest.jt808.frame import Header, parse_frame
from ingest.jt808.framing import split_frames
from ingest.jt808.messages import (
    DriverIdentity,
    Location,
    LocationBatch,
    PlatformReply,
    RawMessage,
    SplitPart,
    TerminalReply,
)
from ingest.jt808.reassembly import Reassembler

__all__ = ["decode_main", "driver_card_to_json", "frame_to_json", "location_to_json"]

_GMT8 = timezone(timedelta(hours=8))
_VERBOSE_KEYS = ("detail", "quirks", "split")


def location_to_json(loc: Location) -> dict[str, Any]:
    return {
        "lat": loc.lat,
        "lon": loc.lon,
        "alt_m": loc.alt_m,
        "speed_kmh": loc.speed_kmh,
        "heading": loc.heading,
        "time": datetime.fromtimestamp(loc.time_ms / 1000, tz=_GMT8).isoformat(),
        "alarm": loc.alarm,
        "status": loc.status,
        "mileage_km": loc.mileage_km,
    }


def driver_card_to_json(card: DriverIdentity) -> dict[str, Any]:
    return {
        "status": "in" if card.inserted else "out",
        "time": datetime.fromtimestamp(card.time_ms / 1000, tz=_GMT8).isoformat(),
        "read_result": card.read_result,
        "name": card.name,
        "certificate": card.certificate,
        "issuer": card.issuer,
        "valid_until": card.valid_until,
        "id_number": card.id_number,
    }


def _empty() -> dict[str, Any]:
    return {
        "valid": False,
        "why_invalid": None,
        "msg_id": None,
        "version": None,
        "phone": None,
        "serial": None,
        "positions": [],
        "batch_type": None,
        "ack": None,
    }


def _header_fields(out: dict[str, Any], h: Header) -> None:
    out.update(msg_id=h.msg_id, version=h.version, phone=h.phone, serial=h.serial)


def frame_to_json(decoded: Decoded) -> dict[str, Any]:
    """The JSON object for one decoded frame."""
    out = _empty()
    out["valid"] = True
    _header_fields(out, decoded.header)
    msg = decoded.message
    if isinstance(msg, Location):
        out["positions"] = [location_to_json(msg)]
    elif isinstance(msg, LocationBatch):
        out["positions"] = [location_to_json(loc) for loc in msg.locations]
        out["batch_type"] = msg.batch_type
    elif isinstance(msg, DriverIdentity):
        out["driver_card"] = driver_card_to_json(msg)
    elif isinstance(msg, PlatformReply | TerminalReply):
        out["ack"] = {"serial": msg.reply_serial, "msg_id": msg.reply_msg_id, "result": msg.result}
    elif isinstance(msg, RawMessage) and msg.msg_id in DOWNLINK_IDS:
        cmd = decode_downlink(msg.msg_id, msg.body, version=decoded.header.version)
        out["command"] = to_wire(_KIND[type(cmd)], cmd)
    elif isinstance(msg, RawMessage) and msg.msg_id in (MSG_LOCATE_REPLY, MSG_PARAMS_REPLY):
        reply = decode_uplink_reply(msg.msg_id, msg.body)
        if isinstance(reply, LocateReply):
            out["positions"] = [location_to_json(reply.location)]
            out["command"] = {"kind": "locate_reply", "reply_serial": reply.reply_serial}
        else:
            out["command"] = {
                "kind": "params_reply",
                "reply_serial": reply.reply_serial,
                "params": reply.named(),
            }
    if decoded.quirks:
        out["quirks"] = list(decoded.quirks)
    return out


_KIND: dict[type[Downlink], str] = {
    TextMessage: "text",
    AlarmConfirm: "confirm_alarm",
    LocateQuery: "locate",
    TemporaryTracking: "track",
    ParamsSet: "params_set",
    ParamsQuery: "params_get",
    TerminalControl: "control",
}


def _invalid(raw: bytes, err: FrameError) -> dict[str, Any]:
    out = _empty()
    out["why_invalid"] = err.reason
    out["detail"] = err.detail
    with contextlib.suppress(FrameError):  # show the header, if it can be read at all
        _header_fields(out, parse_frame(raw, lenient=True).header)
    return out


def _decode_hex(text: str, lenient: bool, reasm: Reassembler) -> list[dict[str, Any]]:
    cleaned = "".join(text.split())
    try:
        data = bytes.fromhex(cleaned)
    except ValueError as exc:
        out = _empty()
        out.update(why_invalid="hex", detail=str(exc))
        return [out]
    frames, junk = split_frames(data)
    if b"\x7e" not in data:  # pasted without delimiters: one frame
        frames, junk = [data], []
    results = [_invalid(raw, err) for raw, err in junk]
    for raw in frames:
        try:
            decoded = decode_frame(raw, lenient=lenient)
            if isinstance(decoded.message, SplitPart):
                whole = reasm.feed(decoded, 0)
                obj = frame_to_json(whole or decoded)
                part = decoded.message
                obj["split"] = [part.total, part.index]
            else:
                obj = frame_to_json(decoded)
        except FrameError as err:
            obj = _invalid(raw, err)
        results.append(obj)
    return results


def decode_main(argv: list[str]) -> int:
    """Entry point of ``fleetwatch decode``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="fleetwatch decode",
        description="Decode JT/T 808 frames given as hex; one JSON object per frame.",
    )
    parser.add_argument("hex", nargs="+", help="frames as hex (7E...7E), or - to read lines")
    parser.add_argument(
        "--lenient", action="store_true", help="accept known device quirks (bad checksum, ...)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="add detail, quirks and split to each object"
    )
    args = parser.parse_args(argv)
    reasm = Reassembler(lenient=args.lenient)
    inputs: list[str] = []
    for item in args.hex:
        if item == "-":
            inputs.extend(line for line in sys.stdin if line.strip())
        else:
            inputs.append(item)
    ok = True
    for text in inputs:
        for obj in _decode_hex(text, args.lenient, reasm):
            ok &= bool(obj["valid"])
            if not args.verbose:
                for extra in _VERBOSE_KEYS:
                    obj.pop(extra, None)
            sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(decode_main(sys.argv[1:]))
