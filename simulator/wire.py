"""Reports (the columns of :meth:`Fleet.step`) as messages: JSON or JT/T 808 frames.

Pure: columns in, ``(topic, payload)`` pairs out. A run of back-fill rows of
one vehicle (a blind area ending) becomes one message: a JSON array, or a
JT/T 808 0x0704 batch of type 1 (blind-area upload).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy.typing as npt
import orjson

from ingest.jt808.codec import encode_location, encode_location_batch
from ingest.jt808.messages import Location
from simulator.fleet import terminal_id

__all__ = ["Columns", "groups", "json_messages", "jt808_messages"]

Columns = dict[str, npt.NDArray[Any]]


def groups(cols: Columns) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges: one live row, or a run of one vehicle's back-fill rows."""
    n = len(cols["ts"])
    back = cols["backfill"].tolist()
    veh = cols["vehicle"].tolist()
    i = 0
    while i < n:
        j = i + 1
        if back[i]:
            while j < n and back[j] and veh[j] == veh[i]:
                j += 1
        yield i, j
        i = j


def json_messages(cols: Columns, prefix: str = "") -> list[tuple[str, bytes]]:
    """The JSON contract (ARCHITECTURE.md): topic ``fleet/{terminal}/position``."""
    rows = {k: v.tolist() for k, v in cols.items()}
    out = []

    def obj(i: int) -> dict[str, object]:
        return {
            "ts": rows["ts"][i],
            "lat": round(rows["lat"][i], 6),
            "lon": round(rows["lon"][i], 6),
            "speed": round(rows["speed"][i], 1),
            "heading": rows["heading"][i],
            "alt": rows["alt"][i],
            "acc": rows["acc"][i],
            "alarm": rows["alarm"][i],
            "status": rows["status"][i],
            "mileage": round(rows["mileage"][i], 1),
        }

    for a, b in groups(cols):
        topic = f"{prefix}fleet/{terminal_id(rows['vehicle'][a])}/position"
        body = obj(a) if b == a + 1 and not rows["backfill"][a] else [obj(i) for i in range(a, b)]
        out.append((topic, orjson.dumps(body)))
    return out


def jt808_messages(
    cols: Columns, serials: dict[int, int], prefix: str = "", version: int = 2013
) -> list[tuple[str, bytes]]:
    """JT/T 808 frames on ``jt808/{phone}/up``: 0x0200 per live row, 0x0704 per back-fill run.
    ``serials`` holds each terminal's message serial number and is advanced."""
    rows = {k: v.tolist() for k, v in cols.items()}
    out = []

    def loc(i: int) -> Location:
        return Location(
            lat=rows["lat"][i],
            lon=rows["lon"][i],
            time_ms=rows["ts"][i],
            speed_kmh=rows["speed"][i],
            heading=rows["heading"][i],
            alt_m=rows["alt"][i],
            alarm=rows["alarm"][i],
            status=rows["status"][i],
            mileage_km=rows["mileage"][i],
        )

    for a, b in groups(cols):
        v = rows["vehicle"][a]
        phone = terminal_id(v)
        serial = serials.get(v, 0)
        serials[v] = (serial + 1) & 0xFFFF
        if rows["backfill"][a]:
            frame = encode_location_batch(
                phone, serial, [loc(i) for i in range(a, b)], backfill=True, version=version
            )
        else:
            frame = encode_location(
                phone,
                serial,
                lat=rows["lat"][a],
                lon=rows["lon"][a],
                speed_kmh=rows["speed"][a],
                heading=rows["heading"][a],
                alt_m=rows["alt"][a],
                time_ms=rows["ts"][a],
                alarm=rows["alarm"][a],
                status=rows["status"][a],
                mileage_km=rows["mileage"][a],
                version=version,
            )
        out.append((f"{prefix}jt808/{phone}/up", frame))
    return out
