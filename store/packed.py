"""Packed columnar chunks of positions: one vehicle-day in one compressed blob (pure, no I/O).

Why: one PostgreSQL row per position cannot get under ~60 B (24 B tuple header, 4 B item
pointer, the (vehicle, ts) index entry, then the data). JT/T 796 asks for 183 days, so the
closed days of the history are packed into one row per vehicle per UTC day whose ``data`` is
this blob, and the hot daily partition is dropped (see ``store/postgres.py`` and
``docs/storage.md``).

Each column is encoded on its own, chosen per chunk, and **checked**: the encoded column
is decoded again and compared bit for bit with the input; when anything differs the column
is stored raw. So a chunk always decodes to exactly the rows it was made of.

Column encodings (``kind``):

- ``RAW``     the values' bytes, byte-shuffled (all first bytes, then all second bytes...),
              which lets the compressor find the slowly changing high bytes;
- ``CONST``   one value (a column that never changes that day: fuel NaN, backfill false);
- ``INT``     integers, optionally as the difference from the previous value (``delta``)
              and/or from the row's timestamp (``minus_ts``: the receive time), stored in the
              narrowest of 1, 2, 4, 8 bytes that holds them all, byte-shuffled;
- ``SCALED``  floats that are whole multiples of ``1/scale`` (JT/T 808-2019 table 27:
              latitude and longitude in 1e-6 degree, speed in 0.1 km/h, mileage in 0.1 km;
              table 28: fuel in 0.1 L) as such integers, then as ``INT``. Accepted only when
              ``(q / scale)`` gives back every float bit for bit (``f32`` variant: computed in
              float32, for values ingest made that way).

The body (header + columns) is compressed with zlib (level :data:`ZLIB_LEVEL`): the
standard library has no zstd on Python 3.11, and zlib decodes a vehicle-day in well under
a millisecond.

Layout: ``MAGIC`` (4 B), ``u32`` uncompressed size, then zlib of::

    u32 rows, u8 columns, then per column:
    u8 name length, name (ascii), u8 kind, u8 flags, u8 width, f8 scale, u32 payload length,
    payload
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.errors import FleetWatchError

__all__ = [
    "COLUMNS",
    "MAGIC",
    "PackError",
    "decode_chunk",
    "encode_chunk",
    "merge_first_wins",
]

MAGIC = b"FWP1"
ZLIB_LEVEL = 9

#: The packed columns (every stored column but the vehicle, which is the row's key) and
#: their native dtypes as the binary COPY decoder returns them (timestamps in microseconds
#: since 2000-01-01, PostgreSQL's own unit, so nothing is rounded).
COLUMNS: Mapping[str, np.dtype[Any]] = {
    "ts": np.dtype("<i8"),
    "lat": np.dtype("<f8"),
    "lon": np.dtype("<f8"),
    "speed": np.dtype("<f4"),
    "heading": np.dtype("<i2"),
    "alt": np.dtype("<i2"),
    "acc": np.dtype("u1"),
    "alarm_bits": np.dtype("<i8"),
    "status_bits": np.dtype("<i8"),
    "mileage": np.dtype("<f4"),
    "backfill": np.dtype("u1"),
    "recv_ts": np.dtype("<i8"),
    "fuel": np.dtype("<f4"),
}

# Units the terminals send (JT/T 808-2019 tables 27 and 28): 1e-6 degree, 0.1 km/h, 0.1 km,
# 0.1 L. A value that is not such a multiple (a JSON terminal with more digits) makes its
# column fall back to RAW for that chunk; nothing is rounded.
_SCALES: Mapping[str, float] = {
    "lat": 1e6,
    "lon": 1e6,
    "speed": 10.0,
    "mileage": 10.0,
    "fuel": 10.0,
}
_MINUS_TS = frozenset({"recv_ts"})

RAW, CONST, INT, SCALED = 0, 1, 2, 3
_DELTA, _MINUS, _F32 = 1, 2, 4
_COL_HEAD = struct.Struct("<BBBdI")
_MAX_ROWS = 10_000_000  # a vehicle-day at 1 Hz is 86,400; anything near this is corrupt


class PackError(FleetWatchError):
    """A blob that is not a packed chunk (wrong magic, truncated, inconsistent)."""


def _shuffle(a: npt.NDArray[Any]) -> bytes:
    w = a.dtype.itemsize
    return np.ascontiguousarray(a).view(np.uint8).reshape(-1, w).T.tobytes()


def _unshuffle(buf: bytes, dtype: np.dtype[Any], n: int) -> npt.NDArray[Any]:
    w = dtype.itemsize
    if len(buf) != n * w:
        raise PackError(f"column payload is {len(buf)} bytes, expected {n * w}")
    raw = np.frombuffer(buf, dtype=np.uint8).reshape(w, n).T
    return np.ascontiguousarray(raw).view(dtype).reshape(n)


def _width(v: npt.NDArray[np.int64]) -> int:
    if v.size == 0:
        return 1
    lo, hi = int(v.min()), int(v.max())
    for w in (1, 2, 4):
        lim = 1 << (8 * w - 1)
        if -lim <= lo and hi < lim:
            return w
    return 8


def _int_payload(v: npt.NDArray[np.int64], flags: int) -> tuple[int, int, bytes]:
    """(flags, width, payload) of the narrower of plain and delta integers."""
    best: tuple[int, int, bytes] | None = None
    for delta in (False, True):
        x = np.diff(v, prepend=np.int64(0)) if delta and v.size else v
        w = _width(x)
        cand = ((flags | _DELTA) if delta else flags, w, _shuffle(x.astype(f"<i{w}")))
        if best is None or w < best[1]:
            best = cand
    assert best is not None
    return best


def _ints_back(payload: bytes, flags: int, width: int, n: int) -> npt.NDArray[np.int64]:
    x = _unshuffle(payload, np.dtype(f"<i{width}"), n).astype(np.int64)
    return np.cumsum(x, dtype=np.int64) if flags & _DELTA else x


def _decode_column(
    kind: int,
    flags: int,
    width: int,
    scale: float,
    payload: bytes,
    dtype: np.dtype[Any],
    n: int,
    ts: npt.NDArray[np.int64] | None,
) -> npt.NDArray[Any]:
    if kind == RAW:
        return _unshuffle(payload, dtype, n)
    if kind == CONST:
        if len(payload) != dtype.itemsize:
            raise PackError("constant column of the wrong size")
        return np.full(n, np.frombuffer(payload, dtype=dtype)[0], dtype=dtype)
    if kind == INT:
        v = _ints_back(payload, flags, width, n)
        if flags & _MINUS:
            if ts is None:
                raise PackError("a column relative to ts before ts")
            v = v + ts
        return v.astype(dtype)
    if kind == SCALED:
        q = _ints_back(payload, flags, width, n)
        if flags & _F32:
            return (q.astype(np.float32) / np.float32(scale)).astype(dtype)
        return (q.astype(np.float64) / scale).astype(dtype)
    raise PackError(f"unknown column kind {kind}")


def _same_bits(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _candidates(
    name: str, v: npt.NDArray[Any], ts: npt.NDArray[np.int64] | None
) -> list[tuple[int, int, int, float, bytes]]:
    """Encodings worth trying for one column, best first (RAW is always the fallback)."""
    out: list[tuple[int, int, int, float, bytes]] = []
    if v.size and _same_bits(v, np.full(v.size, v[0], dtype=v.dtype)):
        out.append((CONST, 0, 0, 0.0, v[:1].tobytes()))
        return out
    if v.dtype.kind in "iu":
        x = v.astype(np.int64)
        if name in _MINUS_TS and ts is not None:
            f, w, p = _int_payload(x - ts, _MINUS)
            out.append((INT, f, w, 0.0, p))
        f, w, p = _int_payload(x, 0)
        out.append((INT, f, w, 0.0, p))
    elif name in _SCALES and v.size:
        scale = _SCALES[name]
        with np.errstate(invalid="ignore", over="ignore"):
            q = np.rint(v.astype(np.float64) * scale)
        if bool(np.all(np.isfinite(q))) and float(np.abs(q).max()) < 2.0**53:
            qi = q.astype(np.int64)
            f, w, p = _int_payload(qi, 0)
            out.append((SCALED, f, w, scale, p))
            if v.dtype == np.float32:
                out.append((SCALED, f | _F32, w, scale, p))
    out.sort(key=lambda c: len(c[4]))
    return out


def _encode_column(
    name: str, v: npt.NDArray[Any], ts: npt.NDArray[np.int64] | None
) -> tuple[int, int, int, float, bytes]:
    n = v.size
    for cand in _candidates(name, v, ts):
        kind, flags, width, scale, payload = cand
        try:
            back = _decode_column(kind, flags, width, scale, payload, v.dtype, n, ts)
        except (PackError, ValueError):
            continue
        if _same_bits(back, v):  # the lossless check, per column
            return cand
    return RAW, 0, v.dtype.itemsize, 0.0, _shuffle(v)


def encode_chunk(columns: Mapping[str, npt.NDArray[Any]]) -> bytes:
    """One blob of the rows in ``columns`` (every name of :data:`COLUMNS`, equal lengths,
    sorted by ts). Raises :class:`~fleet.errors.Misuse`-like ``PackError`` on bad input."""
    n = int(np.asarray(columns["ts"]).shape[0])
    if n > _MAX_ROWS:
        raise PackError(f"{n} rows in one chunk (limit {_MAX_ROWS})")
    parts = [struct.pack("<IB", n, len(COLUMNS))]
    ts = np.asarray(columns["ts"]).astype(np.int64)
    for name, dtype in COLUMNS.items():
        v = np.ascontiguousarray(np.asarray(columns[name]).astype(dtype, copy=False))
        if v.shape != (n,):
            raise PackError(f"column {name}: {v.shape[0]} values for {n} rows")
        kind, flags, width, scale, payload = _encode_column(name, v, ts)
        key = name.encode("ascii")
        parts.append(bytes([len(key)]) + key)
        parts.append(_COL_HEAD.pack(kind, flags, width, scale, len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    return MAGIC + struct.pack("<I", len(body)) + zlib.compress(body, ZLIB_LEVEL)


def decode_chunk(
    blob: bytes | bytearray | memoryview, names: Collection[str] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """The columns of :data:`COLUMNS` (native dtypes) a blob of :func:`encode_chunk` holds;
    only ``names`` (and ``ts``) when given — the board's figures need six of thirteen."""
    raw = bytes(blob)
    if raw[:4] != MAGIC or len(raw) < 8:
        raise PackError("not a packed positions chunk")
    size = struct.unpack_from("<I", raw, 4)[0]
    try:
        body = zlib.decompress(raw[8:], bufsize=max(size, 1))
    except zlib.error as exc:
        raise PackError(f"packed chunk does not decompress: {exc}") from exc
    if len(body) != size:
        raise PackError("packed chunk has the wrong size")
    n, ncols = struct.unpack_from("<IB", body, 0)
    if n > _MAX_ROWS:
        raise PackError(f"packed chunk claims {n} rows")
    pos = 5
    out: dict[str, npt.NDArray[Any]] = {}
    for _ in range(ncols):
        klen = body[pos]
        name = body[pos + 1 : pos + 1 + klen].decode("ascii")
        pos += 1 + klen
        kind, flags, width, scale, plen = _COL_HEAD.unpack_from(body, pos)
        pos += _COL_HEAD.size
        payload = body[pos : pos + plen]
        pos += plen
        if name not in COLUMNS:
            raise PackError(f"packed chunk has an unknown column {name!r}")
        if names is not None and name != "ts" and name not in names:
            continue
        out[name] = _decode_column(
            kind, flags, width, scale, payload, COLUMNS[name], n, out.get("ts")
        )
    wanted = [n for n in COLUMNS if names is None or n == "ts" or n in names]
    missing = set(wanted) - set(out)
    if missing:
        raise PackError(f"packed chunk lacks {sorted(missing)}")
    return {name: out[name] for name in wanted}


def merge_first_wins(
    sources: Sequence[Mapping[str, npt.NDArray[Any]]], names: Sequence[str]
) -> dict[str, npt.NDArray[Any]]:
    """Rows of ``sources`` (each holding ``vehicle`` and ``ts`` among ``names``), one per
    (vehicle, ts), sorted by (vehicle, ts); where two sources hold the same (vehicle, ts) the
    earlier source's row is kept.

    Why: a position is stored once (first write wins: ``ON CONFLICT DO NOTHING``). While a day
    is being packed a reader can see a row both in the packed chunk and in the hot table, and
    a redelivery of an already-packed position lands in the late table; the readers pass
    ``[packed, hot, late]`` so the row that was stored first is the one they return.
    """
    prio = np.concatenate(
        [np.full(np.asarray(s["ts"]).shape[0], k, np.int64) for k, s in enumerate(sources)]
        or [np.zeros(0, np.int64)]
    )
    cols = {
        n: (
            np.concatenate([np.asarray(s[n]) for s in sources])
            if sources
            else np.zeros(0, np.int64)
        )
        for n in names
    }
    if prio.size == 0:
        return cols
    order = np.lexsort((prio, cols["ts"], cols["vehicle"]))
    v, t = cols["vehicle"][order], cols["ts"][order]
    keep = np.ones(order.size, dtype=bool)
    keep[1:] = (v[1:] != v[:-1]) | (t[1:] != t[:-1])
    sel = order[keep]
    return {n: c[sel] for n, c in cols.items()}
