"""Decode the MQTT JSON position contract into a :class:`~fleetwatch.batch.BatchBuilder`.

Topic ``fleet/{terminal_id}/position``; payload one object or an array of
objects (ARCHITECTURE.md, "Interfaces"). Each object is checked on its own: a
bad object becomes a :class:`~fleetwatch.errors.BadRecord` and the good ones
beside it are kept.

Timestamps: ``ts`` is epoch milliseconds (an integer) or an ISO 8601 string. A
string without an offset is read in the terminal's clock, GMT+8, as JT/T 808
terminals report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from fleetwatch.batch import BatchBuilder
from fleetwatch.errors import BadRecord

__all__ = ["JsonLimits", "decode_json_payload", "parse_ts"]

_GMT8 = timezone(timedelta(hours=8))
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_payload_bytes: int = 256 * 1024
    max_positions: int = 1000
    max_future_ms: int = 600_000
    max_past_ms: int = 400 * 86_400_000


def parse_ts(value: Any) -> int:
    """Epoch ms from an int/float of epoch ms or an ISO 8601 string. Raises BadRecord."""
    if isinstance(value, bool):
        raise BadRecord("bad_type", "ts must be epoch milliseconds or an ISO 8601 string")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRecord("not_finite", "ts is not a finite number")
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise BadRecord("bad_timestamp", f"ts {value[:40]!r} is not ISO 8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=_GMT8)
        return int(dt.timestamp() * 1000)
    raise BadRecord("bad_type", "ts must be epoch milliseconds or an ISO 8601 string")


def _number(obj: dict[str, Any], key: str, default: float | None) -> float:
    v = obj.get(key)
    if v is None:
        if default is None:
            raise BadRecord("missing_field", f"{key} is required")
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRecord("bad_type", f"{key} must be a number, got {type(v).__name__}")
    f = float(v)
    if not math.isfinite(f):
        raise BadRecord("not_finite", f"{key} is not a finite number")
    return f


def _bits(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _U32:
        raise BadRecord("bad_type", f"{key} must be an unsigned 32-bit integer (JT/T 808 flags)")
    return v


def _decode_one(
    obj: Any, vehicle: int, recv_ts: int, limits: JsonLimits, out: BatchBuilder
) -> None:
    if not isinstance(obj, dict):
        raise BadRecord("not_object", f"expected a JSON object, got {type(obj).__name__}")
    if "ts" not in obj:
        raise BadRecord("missing_field", "ts is required")
    ts = parse_ts(obj["ts"])
    lat = _number(obj, "lat", None)
    lon = _number(obj, "lon", None)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise BadRecord("out_of_range", f"lat {lat} / lon {lon} outside WGS-84 range")
    if ts > recv_ts + limits.max_future_ms:
        raise BadRecord("future_ts", f"ts is {(ts - recv_ts) / 1000:.0f} s in the future")
    if ts < recv_ts - limits.max_past_ms:
        hint = " (ts must be epoch milliseconds, not seconds)" if 0 < ts < 10**11 else ""
        raise BadRecord("stale_ts", f"ts is older than the accepted window{hint}")
    speed = _number(obj, "speed", 0.0)
    if not 0.0 <= speed <= 400.0:
        raise BadRecord("out_of_range", f"speed {speed} km/h outside 0..400")
    heading = _number(obj, "heading", 0.0)
    if not 0.0 <= heading <= 360.0:
        raise BadRecord("out_of_range", f"heading {heading} outside 0..360")
    alt = _number(obj, "alt", 0.0)
    if not -500.0 <= alt <= 9000.0:
        raise BadRecord("out_of_range", f"alt {alt} m outside -500..9000")
    alarm = _bits(obj, "alarm")
    status = _bits(obj, "status")
    acc_v = obj.get("acc")
    if acc_v is None:
        acc = bool(status & 1)  # JT/T 808 table 25, bit 0: ACC on
    elif isinstance(acc_v, bool):
        acc = acc_v
    else:
        raise BadRecord("bad_type", "acc must be true or false")
    mileage = _number(obj, "mileage", math.nan) if obj.get("mileage") is not None else math.nan
    out.append(
        vehicle=vehicle,
        ts=ts,
        lat=lat,
        lon=lon,
        speed=speed,
        heading=int(heading) % 360,
        alt=int(alt),
        acc=acc,
        alarm_bits=alarm,
        status_bits=status,
        mileage=mileage,
        backfill=False,
        recv_ts=recv_ts,
    )


def decode_json_payload(
    payload: bytes,
    *,
    terminal: str,
    vehicle: int | None,
    recv_ts: int,
    limits: JsonLimits,
    out: BatchBuilder,
) -> list[BadRecord]:
    """Append the valid positions of ``payload`` to ``out``; return one error per bad part.

    ``vehicle`` is the registry index of ``terminal`` or None when the terminal
    is unknown (then the whole payload is rejected). Never raises for bad input.
    """
    if len(payload) > limits.max_payload_bytes:
        return [
            BadRecord(
                "oversized", f"{len(payload)} bytes > {limits.max_payload_bytes}", terminal=terminal
            )
        ]
    if vehicle is None:
        return [
            BadRecord(
                "unknown_terminal",
                f"terminal {terminal[:32]!r} is not registered",
                terminal=terminal,
            )
        ]
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return [BadRecord("invalid_json", str(exc)[:200], terminal=terminal)]
    items = doc if isinstance(doc, list) else [doc]
    if len(items) > limits.max_positions:
        return [
            BadRecord(
                "too_many_positions", f"{len(items)} > {limits.max_positions}", terminal=terminal
            )
        ]
    errors: list[BadRecord] = []
    for i, obj in enumerate(items):
        try:
            _decode_one(obj, vehicle, recv_ts, limits, out)
        except BadRecord as err:
            where = f"item {i}: " if isinstance(doc, list) else ""
            errors.append(BadRecord(err.reason, where + err.detail, terminal=terminal))
    return errors
