"""Positions from MQTT payloads of raw JT/T 808 frames, straight into columns.

:func:`decode_position_payloads` is what the ingest stage calls. It runs a
vectorized path (numpy, all frames of all payloads at once: delimiters,
unescaping, checksum, header, the 28-byte block, the additional-item walk,
0x0704 items) over every payload whose frames are all clean 0x0200/0x0704
frames, and the scalar reference decoder (:func:`decode_position_payloads_scalar`)
over the rest: payloads with an error, a quirk, a split message or another
message type. The scalar decoder is the authority on errors; the vectorized
path only ever accepts frames the scalar decoder would accept strictly, with
the same values (tests check both agree on random frames).

Column units follow :mod:`fleet.batch`; ``source`` is the index of the
payload a row came from and ``phone`` an index into ``phones``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.batch import POINT_FIELDS, dtypes
from fleet.errors import FrameError
from ingest.jt808.codec import Decoded, decode_frame
from ingest.jt808.framing import split_frames
from ingest.jt808.messages import (
    FIXED_ITEM_LENGTHS,
    LOCATION_BLOCK,
    MSG_LOCATION,
    MSG_LOCATION_BATCH,
    Location,
    LocationBatch,
    SplitPart,
    decode_body,
)

__all__ = [
    "COLUMNS",
    "DecodedPayloads",
    "decode_position_payloads",
    "decode_position_payloads_scalar",
]

Array = npt.NDArray[Any]

# The batch's point fields (fleet.batch, declared there once), plus where each row came from.
COLUMNS: dict[str, np.dtype[Any]] = {
    **dtypes(POINT_FIELDS),
    "source": np.dtype(np.int32),  # index of the payload in the call's list
    "phone": np.dtype(np.int32),  # index into DecodedPayloads.phones
}

_GMT8_MS = 8 * 3600 * 1000


@dataclass(frozen=True)
class DecodedPayloads:
    """What :func:`decode_position_payloads` found in a list of payloads.

    ``columns``: one array per :data:`COLUMNS` key, rows ordered by payload,
    then frame, then item. ``phones``: phone numbers of the rows, in order of
    first appearance. ``errors``: ``(payload index, error, raw frame bytes)``.
    ``others``: ``(payload index, Decoded)`` for non-position messages.
    """

    columns: dict[str, Array]
    phones: list[str]
    errors: list[tuple[int, FrameError, bytes]] = field(default_factory=list)
    others: list[tuple[int, object]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.columns["ts"].shape[0])


def _empty_columns() -> dict[str, Array]:
    return {k: np.empty(0, dtype=dt) for k, dt in COLUMNS.items()}


# --- scalar reference --------------------------------------------------------------------------


class _Rows:
    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in COLUMNS}
        self.phones: dict[str, int] = {}

    def add(self, loc: Location, *, backfill: bool, source: int, phone: str) -> None:
        c = self.cols
        code = self.phones.setdefault(phone, len(self.phones))
        c["ts"].append(loc.time_ms)
        c["lat"].append(loc.lat)
        c["lon"].append(loc.lon)
        c["speed"].append(loc.speed_kmh)
        h = loc.heading & 0xFFFF
        c["heading"].append(h - 0x10000 if h >= 0x8000 else h)
        c["alt"].append(loc.alt_m)
        c["acc"].append(bool(loc.status & 1))
        c["alarm_bits"].append(loc.alarm)
        c["status_bits"].append(loc.status)
        c["mileage"].append(np.nan if loc.mileage_km is None else loc.mileage_km)
        c["fuel"].append(np.nan if loc.fuel_l is None else loc.fuel_l)
        c["backfill"].append(backfill)
        c["source"].append(source)
        c["phone"].append(code)

    def columns(self) -> dict[str, Array]:
        return {k: np.array(v, dtype=COLUMNS[k]) for k, v in self.cols.items()}


def _add_message(rows: _Rows, others: list[tuple[int, object]], src: int, d: Decoded) -> None:
    msg = d.message
    if isinstance(msg, Location):
        rows.add(msg, backfill=False, source=src, phone=d.header.phone)
    elif isinstance(msg, LocationBatch):
        for loc in msg.locations:
            rows.add(loc, backfill=msg.backfill, source=src, phone=d.header.phone)
    else:
        others.append((src, d))


def _scalar_into(
    rows: _Rows,
    errors: list[tuple[int, FrameError, bytes]],
    others: list[tuple[int, object]],
    src: int,
    payload: bytes,
    lenient: Callable[[str], bool] | None,
) -> None:
    frames, junk = split_frames(payload)
    for raw, err in junk:
        errors.append((src, err, raw))
    parts: dict[tuple[str, int, int, int], list[tuple[Decoded, bytes]]] = {}
    for raw in frames:
        try:
            d = decode_frame(raw, lenient=lenient)
        except FrameError as exc:
            errors.append((src, exc, raw))
            continue
        part = d.message
        if not isinstance(part, SplitPart):
            _add_message(rows, others, src, d)
            continue
        # A split message must arrive whole within one payload (the gateway
        # publishes all sub-packages of a message together).
        first = (d.header.serial - (part.index - 1)) & 0xFFFF
        key = (d.header.phone, part.msg_id, part.total, first)
        group = parts.setdefault(key, [])
        group.append((d, raw))
        if len({p.message.index for p, _ in group}) == part.total:  # type: ignore[union-attr]
            del parts[key]
            by_index = {p.message.index: p for p, _ in group}  # type: ignore[union-attr]
            body = b"".join(by_index[i].message.data for i in range(1, part.total + 1))  # type: ignore[union-attr]
            try:
                msg = decode_body(
                    part.msg_id, body, version=d.header.version, lenient=bool(d.quirks)
                )
            except FrameError as exc:
                errors.append((src, exc, b"".join(r for _, r in group)))
                continue
            _add_message(rows, others, src, Decoded(d.header, msg, d.quirks))
    for (phone, msg_id, total, _), group in parts.items():
        err = FrameError(
            "split_incomplete",
            f"0x{msg_id:04X}: {len(group)} of {total} sub-packages in the payload",
            terminal=phone,
        )
        for _, raw in group:
            errors.append((src, err, raw))


def decode_position_payloads_scalar(
    payloads: Sequence[bytes], *, lenient: Callable[[str], bool] | None = None
) -> DecodedPayloads:
    """The plain, frame-by-frame reference for :func:`decode_position_payloads`."""
    rows = _Rows()
    errors: list[tuple[int, FrameError, bytes]] = []
    others: list[tuple[int, object]] = []
    for src, payload in enumerate(payloads):
        _scalar_into(rows, errors, others, src, payload, lenient)
    return DecodedPayloads(rows.columns(), list(rows.phones), errors, others)


# --- vectorized --------------------------------------------------------------------------------

_PAD = 64  # zero bytes after the buffer so that gathers never leave it

_WANT_LEN = np.zeros(256, dtype=np.int16)  # 0: any length accepted
for _k, _v in FIXED_ITEM_LENGTHS.items():
    _WANT_LEN[_k] = _v


def _u16(buf: Array, i: Array) -> Array:
    return np.asarray((buf[i].astype(np.int64) << 8) | buf[i + 1])


def _u32(buf: Array, i: Array) -> Array:
    return np.asarray(
        (buf[i].astype(np.int64) << 24)
        | (buf[i + 1].astype(np.int64) << 16)
        | (buf[i + 2].astype(np.int64) << 8)
        | buf[i + 3]
    )


def _days_from_civil(y: Array, m: Array, d: Array) -> Array:
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return np.asarray(era * 146097 + doe - 719468)


_MDAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _bcd_time(buf: Array, start: Array) -> tuple[Array, Array]:
    """(epoch ms UTC, ok) of the 6-byte BCD GMT+8 times at ``start``."""
    t = buf[start[:, None] + np.arange(6)].astype(np.int64)
    hi, lo = t >> 4, t & 0xF
    ok = ((hi <= 9) & (lo <= 9)).all(axis=1)
    v = hi * 10 + lo
    year = 2000 + v[:, 0]
    mo, dd, hh, mi, ss = v[:, 1], v[:, 2], v[:, 3], v[:, 4], v[:, 5]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    mdays = _MDAYS[np.clip(mo, 0, 12)] + ((mo == 2) & leap)
    ok &= (mo >= 1) & (mo <= 12) & (dd >= 1) & (dd <= mdays) & (hh < 24) & (mi < 60) & (ss < 60)
    days = _days_from_civil(year, mo, dd)
    ms = ((days * 86400 + hh * 3600 + mi * 60 + ss) * 1000) - _GMT8_MS
    return ms, ok


def _vector(
    payloads: Sequence[bytes],
) -> tuple[Array, dict[str, Array], Array, list[str]]:
    """Decode clean payloads. Returns (payload_ok mask, columns, phone codes, phones)."""
    npay = len(payloads)
    lens = np.array(list(map(len, payloads)), dtype=np.int64)
    ends = np.cumsum(lens)
    starts = ends - lens
    raw = np.frombuffer(b"".join(payloads) + bytes(_PAD), dtype=np.uint8)
    total = int(ends[-1]) if npay else 0
    pay_ok = lens > 0

    # Delimiters: every payload must start and end with 7E (no junk outside frames).
    delim = np.flatnonzero(raw[:total] == 0x7E)
    d_pay = np.searchsorted(ends, delim, side="right")
    first = np.searchsorted(delim, starts, side="left")
    last = np.searchsorted(delim, ends, side="left") - 1
    has = first <= last
    fi = np.clip(first, 0, max(len(delim) - 1, 0))
    li = np.clip(last, 0, max(len(delim) - 1, 0))
    if len(delim):
        pay_ok &= has & (delim[fi] == starts) & (delim[li] == ends - 1)
    else:
        pay_ok[:] = False

    # Escapes: 7D 01 → 7D, 7D 02 → 7E; anything else sends the payload to the scalar path.
    esc = np.flatnonzero(raw[:total] == 0x7D)
    if len(esc):
        nxt = raw[esc + 1]
        good = (nxt == 1) | (nxt == 2)
        bad_pay = np.searchsorted(ends, esc[~good], side="right")
        pay_ok[bad_pay] = False
        removed = esc[good] + 1
        buf = raw.copy()
        buf[esc[good]] = 0x7C + nxt[good]
        keep = np.ones(len(raw), dtype=bool)
        keep[removed] = False
        buf = buf[keep]
        delim = delim - np.searchsorted(removed, delim, side="left")
    else:
        buf = raw

    # Frame candidates: non-empty runs between consecutive delimiters of one payload.
    s = delim[:-1] + 1
    e = delim[1:]
    same = d_pay[:-1] == d_pay[1:]
    keep_seg = same & (e > s)
    s, e, seg_pay = s[keep_seg], e[keep_seg], d_pay[:-1][keep_seg]
    nb = len(buf) - _PAD
    cs = np.clip(s, 0, nb)  # safe bases for gathers
    length = e - s
    msg_id = _u16(buf, cs)
    props = _u16(buf, cs + 2)
    v19 = (props & 0x4000) != 0
    hl = np.where(v19, 17, 12)
    ok = (length >= 13) & (hl + (props & 0x3FF) + 1 == length) & ((props & 0x3C00) == 0)
    ok &= (msg_id == MSG_LOCATION) | (msg_id == MSG_LOCATION_BATCH)
    # Checksum: XOR over header+body+checksum is 0; prefix XOR makes it O(1) per frame.
    cx = np.bitwise_xor.accumulate(buf)
    ok &= (cx[np.clip(e - 1, 0, nb)] ^ cx[np.clip(s - 1, 0, nb)]) == 0
    body = cs + hl
    bend = np.clip(e - 1, 0, nb)

    # Location bodies: one per 0x0200, ``count`` per 0x0704.
    is_batch = msg_id == MSG_LOCATION_BATCH
    loc_s = [body[~is_batch]]
    loc_e = [bend[~is_batch]]
    loc_seg = [np.flatnonzero(~is_batch)]
    loc_k = [np.zeros(int((~is_batch).sum()), dtype=np.int64)]
    loc_backfill = [np.zeros(int((~is_batch).sum()), dtype=bool)]
    bidx = np.flatnonzero(is_batch & ok)
    if len(bidx):
        bb = body[bidx]
        count = _u16(buf, bb)
        btype = buf[bb + 2]
        p = bb + 3
        fine = count * 30 <= bend[bidx] - p  # each item is at least 2 + 28 bytes
        k = 0
        active = fine & (count > 0)
        while active.any():
            ai = np.flatnonzero(active)
            pa = p[ai]
            ln = _u16(buf, np.clip(pa, 0, nb))
            sub_s = pa + 2
            sub_e = sub_s + ln
            over = sub_e > bend[bidx[ai]]
            fine[ai[over]] = False
            loc_s.append(sub_s)
            loc_e.append(sub_e)
            loc_seg.append(bidx[ai])
            loc_k.append(np.full(len(ai), k, dtype=np.int64))
            loc_backfill.append(btype[ai] == 1)
            p[ai] = sub_e
            k += 1
            active = fine & (count > k)
        fine &= p == bend[bidx]
        ok[bidx[~fine]] = False
    ls = np.concatenate(loc_s)
    le = np.concatenate(loc_e)
    lseg = np.concatenate(loc_seg)
    lk = np.concatenate(loc_k)
    lbf = np.concatenate(loc_backfill)
    if len(loc_s) > 1:  # 0x0704 items were appended after the 0x0200 bodies
        order = np.lexsort((lk, lseg))
        ls, le, lseg, lbf = ls[order], le[order], lseg[order], lbf[order]
    ls = np.clip(ls, 0, nb)
    le = np.clip(le, 0, nb)
    lok = le - ls >= LOCATION_BLOCK

    # The fixed 28-byte block.
    alarm = _u32(buf, ls)
    status = _u32(buf, ls + 4)
    lat = _u32(buf, ls + 8) / 1e6
    lon = _u32(buf, ls + 12) / 1e6
    lat = np.where(status & 4, -lat, lat)
    lon = np.where(status & 8, -lon, lon)
    alt = _u16(buf, ls + 16)
    speed = _u16(buf, ls + 18) / 10
    heading = _u16(buf, ls + 20)
    ts, tok = _bcd_time(buf, ls + 22)
    lok &= tok

    # Additional items: step every location's cursor at once, item by item.
    mileage = np.full(len(ls), np.nan)
    fuel = np.full(len(ls), np.nan)
    p = ls + LOCATION_BLOCK
    active = lok & ok[lseg] & (p < le)
    while active.any():
        ai = np.flatnonzero(active)
        pa, ea = p[ai], le[ai]
        item = buf[pa]
        ln = buf[pa + 1].astype(np.int64)
        nxt = pa + 2 + ln
        want = _WANT_LEN[item]
        bad = (pa + 2 > ea) | (nxt > ea) | ((want != 0) & (ln != want))
        bad |= (item == 0x11) & (ln != 1) & (ln != 5)
        lok[ai[bad]] = False
        m = (item == 0x01) & ~bad
        mileage[ai[m]] = _u32(buf, pa[m] + 2) / 10
        f = (item == 0x02) & ~bad  # JT/T 808-2019 table 27: fuel, WORD, 1/10 L
        fuel[ai[f]] = _u16(buf, pa[f] + 2) / 10
        p[ai] = nxt
        active[ai] = ~bad & (nxt < ea)

    ok[lseg[~lok]] = False
    pay_ok[seg_pay[~ok]] = False
    rows = pay_ok[seg_pay[lseg]] if len(lseg) else np.zeros(0, dtype=bool)

    # Phones: 2013 (6 BCD bytes) and 2019 (10) keyed apart, decoded once per distinct phone.
    rseg = lseg[rows]
    rs = cs[rseg]
    rv = v19[rseg]
    key = np.zeros((len(rseg), 11), dtype=np.uint8)
    key[:, 0] = rv
    key[:, 1:] = buf[(rs + np.where(rv, 5, 4))[:, None] + np.arange(10)]
    key[~rv, 7:] = 0
    keys = np.ascontiguousarray(key).view(np.dtype("V11")).ravel()
    uniq, inverse = np.unique(keys, return_inverse=True)
    phones = [bytes(u)[1:11].hex() if bytes(u)[0] else bytes(u)[1:7].hex() for u in uniq.tolist()]
    cols = {
        "ts": ts[rows],
        "lat": lat[rows],
        "lon": lon[rows],
        "speed": speed[rows].astype(np.float32),
        "heading": heading[rows].astype(np.uint16).view(np.int16),
        "alt": alt[rows].astype(np.uint16).view(np.int16),
        "acc": (status[rows] & 1).astype(bool),
        "alarm_bits": alarm[rows].astype(np.uint32),
        "status_bits": status[rows].astype(np.uint32),
        "mileage": mileage[rows].astype(np.float32),
        "fuel": fuel[rows].astype(np.float32),
        "backfill": lbf[rows],
        "source": seg_pay[rseg].astype(np.int32),
    }
    return pay_ok, cols, inverse.astype(np.int64).ravel(), phones


def decode_position_payloads(
    payloads: Sequence[bytes], *, lenient: Callable[[str], bool] | None = None
) -> DecodedPayloads:
    """Decode every frame of every payload; positions as columns.

    A payload may hold several frames; a bad frame becomes an entry of
    ``errors`` and never costs the good frames beside it. ``lenient(phone)``
    says whether a terminal's quirks are accepted (see :mod:`ingest.jt808.frame`).
    """
    if not payloads:
        return DecodedPayloads(_empty_columns(), [])
    pay_ok, vcols, vphone, vphones = _vector(payloads)
    rows = _Rows()
    errors: list[tuple[int, FrameError, bytes]] = []
    others: list[tuple[int, object]] = []
    for src in np.flatnonzero(~pay_ok).tolist():
        _scalar_into(rows, errors, others, src, payloads[src], lenient)
    if rows.cols["ts"]:
        scols = rows.columns()
        names = vphones + list(rows.phones)
        codes = np.concatenate([vphone, scols["phone"].astype(np.int64) + len(vphones)])
        merged = {k: np.concatenate([vcols[k], scols[k]]) for k in vcols}
        order = np.argsort(merged["source"], kind="stable")
        merged = {k: v[order] for k, v in merged.items()}
        codes = codes[order]
    else:
        merged, names, codes = vcols, vphones, vphone
    phone, phones = _first_appearance(codes, names)
    merged["phone"] = phone
    return DecodedPayloads(merged, phones, errors, others)


def _first_appearance(codes: Array, names: list[str]) -> tuple[Array, list[str]]:
    """Renumber row phone codes (indices into ``names``) by first appearance."""
    if not len(codes):
        return np.empty(0, dtype=np.int32), []
    uniq_names, name_code = np.unique(np.array(names, dtype=object), return_inverse=True)
    c = name_code.ravel()[codes]
    uniq, first, inverse = np.unique(c, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int32)
    rank[by_first] = np.arange(len(uniq), dtype=np.int32)
    return rank[inverse.ravel()], [str(uniq_names[uniq[i]]) for i in by_first]
