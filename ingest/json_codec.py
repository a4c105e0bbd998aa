"""Decode the MQTT JSON position contract into a :class:`~fleet.batch.BatchBuilder`.

Topic ``fleet/{terminal_id}/position``; payload one object or an array of
objects (ARCHITECTURE.md, "Interfaces"). Each object is checked on its own: a
bad object becomes a :class:`~fleet.errors.BadRecord` and the good ones
beside it are kept.

Timestamps: ``ts`` is epoch milliseconds (an integer) or an ISO 8601 string. A
string without an offset is read in the terminal's clock, GMT+8, as JT/T 808
terminals report it.

Two ways to decode, with the same result:

* :func:`decode_json_payload` checks one payload object by object — the
  reference, plain Python, one error per bad object.
* :func:`decode_objects` checks many parsed objects at once, column by column
  (numpy), which is what the ingest core does at flush time. Rows that pass
  every column check are taken as they are; every other row (a bad one, or one
  with an unusual but valid shape such as an ISO ``ts``) goes through the
  reference check, which gives it its value or its reason. The two agree on
  every input (tests/ingest/test_json_codec.py, hypothesis).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from fleet.batch import FIELDS, BatchBuilder, PositionBatch
from fleet.errors import BadRecord
from ingest.validate import check_position, valid_rows

__all__ = ["JsonLimits", "decode_json_payload", "decode_objects", "parse_ts"]

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
    speed = _number(obj, "speed", 0.0)
    heading = _number(obj, "heading", 0.0)
    alt = _number(obj, "alt", 0.0)
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
    # The same ranges and time window as every codec (ingest/validate.py).
    err = check_position(
        ts=ts,
        lat=lat,
        lon=lon,
        speed=speed,
        heading=heading,
        alt=alt,
        mileage=mileage,
        recv_ts=recv_ts,
        window=limits,
    )
    if err is not None:
        raise err
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


# -- the column-wise decoder ------------------------------------------------------------------

Array = npt.NDArray[Any]
_NUM: frozenset[type] = frozenset({int, float})
_NUM_OR_NONE: frozenset[type] = frozenset({int, float, type(None)})
_INT_OR_NONE: frozenset[type] = frozenset({int, type(None)})
_BOOL_OR_NONE: frozenset[type] = frozenset({bool, type(None)})


_KEYS = ("ts", "lat", "lon", "speed", "heading", "alt", "acc", "alarm", "status", "mileage")


def _gather(objs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The values of every key the contract knows, one list per key (None where absent).

    When all objects have the same keys (one terminal model, one firmware: the
    usual case), one ``itemgetter`` pass and a transpose do it; otherwise one
    ``dict.get`` pass per key.
    """
    n = len(objs)
    first = list(objs[0])
    if len(first) >= 2 and set(map(len, objs)) == {len(first)}:
        try:
            # Same size and holding every key of the first: the same key set.
            rows = list(map(operator.itemgetter(*first), objs))
        except KeyError:
            pass
        else:
            by_key = dict(zip(first, zip(*rows, strict=True), strict=True))
            return {k: list(by_key[k]) if k in by_key else [None] * n for k in _KEYS}
    return {k: [o.get(k) for o in objs] for k in _KEYS}


def _column(vals: list[Any], allowed: frozenset[type], fill: Any) -> tuple[list[Any], Array | None]:
    """``vals`` and, when some are of a type outside ``allowed``, a mask of them.

    Values of a type outside ``allowed`` are replaced by ``fill`` so the column
    converts to an array; the mask marks their rows for the reference check.
    """
    if set(map(type, vals)) <= allowed:
        return vals, None
    bad = np.fromiter((type(v) not in allowed for v in vals), dtype=bool, count=len(vals))
    return [fill if b else v for v, b in zip(vals, bad.tolist(), strict=True)], bad


def _floats(vals: list[Any], default: float) -> Array:
    if None in vals:
        vals = [default if v is None else v for v in vals]
    return np.array(vals, dtype=np.float64)


def _to_float32(a: Array) -> Array:
    with np.errstate(over="ignore"):  # a huge odometer reading becomes inf, as in the reference
        return a.astype(np.float32)


def decode_objects(
    objs: Sequence[Any], vehicle: Array, recv_ts: Array, limits: JsonLimits
) -> tuple[PositionBatch, list[tuple[int, BadRecord]]]:
    """Decode parsed JSON objects column by column: the valid rows as a batch, in order.

    ``vehicle`` and ``recv_ts`` give each object's registry index and receive
    time. Returns the batch of the valid objects and ``(index, error)`` for
    each invalid one — the same as :func:`decode_json_payload` would give
    object by object.
    """
    n = len(objs)
    if n == 0:
        return PositionBatch.empty(), []
    slow = np.fromiter((type(o) is not dict for o in objs), dtype=bool, count=n)
    rows: Sequence[dict[str, Any]] = objs
    if slow.any():
        rows = [o if type(o) is dict else {} for o in objs]
    try:
        cols = _vector_columns(rows, recv_ts, limits, slow)
    except (OverflowError, ValueError, TypeError):  # e.g. an unsigned 64-bit ts
        cols, slow = None, np.ones(n, dtype=bool)
    errors: list[tuple[int, BadRecord]] = []
    keep = ~slow
    if slow.any():
        idx = np.flatnonzero(slow)
        ref = BatchBuilder()
        accepted: list[int] = []
        for i in idx.tolist():
            try:
                _decode_one(objs[i], int(vehicle[i]), int(recv_ts[i]), limits, ref)
                accepted.append(i)
            except BadRecord as err:
                errors.append((i, err))
        ref_batch = ref.build()
        if cols is None:
            return ref_batch, errors
        if accepted:
            at = np.asarray(accepted, dtype=np.intp)
            for name, arr in cols.items():
                if name not in ("vehicle", "recv_ts"):
                    arr[at] = getattr(ref_batch, name)
            keep[at] = True
    assert cols is not None
    cols["vehicle"] = np.asarray(vehicle, dtype=np.int32)
    cols["recv_ts"] = np.asarray(recv_ts, dtype=np.int64)
    if "fuel" not in cols:  # the JSON message has no fuel level
        cols["fuel"] = np.full(keep.shape[0], np.nan, dtype=np.float32)
    if keep.all():
        out = {name: np.ascontiguousarray(cols[name], dtype=dt) for name, dt in FIELDS.items()}
    else:
        out = {name: np.asarray(cols[name], dtype=dt)[keep] for name, dt in FIELDS.items()}
    return PositionBatch(**out), errors


def _vector_columns(
    rows: Sequence[dict[str, Any]], recv_ts: Array, limits: JsonLimits, slow: Array
) -> dict[str, Array]:
    """The columns of ``rows``; marks in ``slow`` every row the reference must look at."""
    got = _gather(rows)
    ts_vals, bad = _column(got["ts"], frozenset({int}), 0)  # floats, ISO strings: reference
    if bad is not None:
        slow |= bad
    ts = np.array(ts_vals, dtype=np.int64)
    recv = np.asarray(recv_ts, dtype=np.int64)

    def number(key: str, default: float | None) -> Array:
        vals, bad = _column(got[key], _NUM if default is None else _NUM_OR_NONE, 0.0)
        if bad is not None:
            slow[...] |= bad
        if default is None and None in vals:  # a missing required field
            slow[...] |= np.fromiter((v is None for v in vals), dtype=bool, count=len(vals))
            default = 0.0
        arr = _floats(vals, 0.0 if default is None else default)
        slow[...] |= ~np.isfinite(arr)
        return arr

    lat = number("lat", None)
    lon = number("lon", None)
    speed = number("speed", 0.0)
    heading = number("heading", 0.0)
    alt = number("alt", 0.0)

    def bits(key: str) -> Array:
        vals, bad = _column(got[key], _INT_OR_NONE, 0)
        if bad is not None:
            slow[...] |= bad
        arr = np.array([0 if v is None else v for v in vals] if None in vals else vals)
        # Checked before any cast: a negative int beside one above 2**63 makes a float
        # column, whose cast to int64 would not keep the values.
        slow[...] |= (arr < 0) | (arr > _U32)
        if arr.dtype.kind not in "iu":
            with np.errstate(invalid="ignore"):  # rows out of range are the reference's
                arr = arr.astype(np.int64)
        return arr

    alarm = bits("alarm")
    status = bits("status")
    acc_vals, bad = _column(got["acc"], _BOOL_OR_NONE, False)
    if bad is not None:
        slow |= bad
    acc_known = np.array([v is not None for v in acc_vals], dtype=bool)
    acc = np.array([bool(v) for v in acc_vals], dtype=bool)
    acc = np.where(acc_known, acc, (status & 1) != 0)  # JT/T 808 table 25, bit 0: ACC on
    mil_vals, bad = _column(got["mileage"], _NUM_OR_NONE, 0.0)
    if bad is not None:
        slow |= bad
    mileage = _floats(mil_vals, math.nan)
    finite_or_missing = np.isfinite(mileage) | np.array([v is None for v in mil_vals])
    slow |= ~finite_or_missing
    # The same ranges and time window as every codec (ingest/validate.py).
    raw = {"ts": ts, "lat": lat, "lon": lon, "speed": speed, "heading": heading, "alt": alt}
    slow |= ~valid_rows({**raw, "mileage": mileage}, recv, limits)
    ok = ~slow
    return {
        "ts": ts,
        "lat": lat,
        "lon": lon,
        "speed": _to_float32(np.where(ok, speed, 0.0)),
        # int() truncates toward zero, as the reference does.
        "heading": np.where(ok, np.trunc(heading), 0).astype(np.int64) % 360,
        "alt": np.where(ok, np.trunc(alt), 0).astype(np.int16),
        "acc": acc,
        "alarm_bits": np.where(ok, alarm, 0).astype(np.uint32),
        "status_bits": np.where(ok, status, 0).astype(np.uint32),
        "mileage": _to_float32(np.where(ok | np.isnan(mileage), mileage, 0.0)),
        "backfill": np.zeros(len(rows), dtype=bool),
    }
