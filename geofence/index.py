"""The fence index: which fences is each point of a batch in?

``FenceIndex.build(fences)`` rasterises every fence onto one uniform grid over
the fences' bounding box. Each (cell, fence) pair is one of

* **inside** — no edge of the fence touches the cell (closed, grown by
  :data:`EPS_DEG`), and the cell centre is inside: every point of the cell is in;
* **boundary** — an edge touches the cell: the point gets an exact test;
* **outside** — neither (not stored).

The exact test for polygons is a crossing count along the segment from the
point to a reference point ``r`` chosen inside the cell whose status is known
(computed with shapely at build time): the point's status is ``r``'s status
flipped once for every boundary edge the segment properly crosses. Only the
edges bucketed in that cell are involved, and the whole segment lies in the
cell, so the test is local. Every orientation is computed in float64 with a
forward error bound (Shewchuk's filter); when a sign is not certain — the
point is on, or within ~1e-15 relative of, an edge or vertex, or the segment
passes through a vertex — the pair is decided by ``shapely.intersects_xy``
instead (for a point this is ``covers``). The result is therefore identical to
shapely's ``covers`` on every point.

Boundary semantics: a polygon fence contains its boundary (``covers``: a
point on an edge or vertex, including a hole's ring, is in); a point in a hole
is out. Circles and corridors contain the points at distance ≤ their
radius / half-width (see :mod:`geofence.distance`). NaN or infinite
coordinates are in no fence.

The index is immutable; :class:`LiveFences` swaps in a new one (copy-on-write)
when fences are added, changed or deleted, so readers never wait.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely

from fleet.errors import Misuse
from geofence.distance import metres_per_degree, segment_distance_m
from geofence.fence import USES, Fence

__all__ = [
    "EPS_DEG",
    "USE_CODES",
    "FenceIndex",
    "LiveFences",
    "membership_reference",
]

USE_CODES: dict[str, int] = {u: i for i, u in enumerate(USES)}
EPS_DEG = 1e-9  # cells grow by this much when bucketing (≈0.1 mm; float rounding is ~1e-14°)
_ERRBOUND = 1e-15  # relative error bound of a float64 2-D orientation (Shewchuk's is 3.3e-16)
_MAX_CELLS = 4_000_000
_MIN_CELLS = 1_024
# Reference-point candidates, as fractions of the cell; irrational-looking so that
# fences aligned with the grid do not pass through them.
_REF_FRACTIONS = (
    (0.5, 0.5),
    (0.31830989, 0.70710678),
    (0.84147098, 0.27182818),
    (0.14142136, 0.16180340),
    (0.69314718, 0.91893853),
)

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]


def _expand(starts: I64, counts: I64) -> tuple[I64, I64]:
    """CSR expansion: (owner row, position) for every item of every row."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(counts.shape[0], dtype=np.int64), counts)
    first = np.cumsum(counts) - counts
    pos = np.arange(total, dtype=np.int64) - np.repeat(first - starts, counts)
    return owner, pos


def _ptr(keys_sorted: I64, n: int) -> I64:
    """CSR row pointers for sorted row ids ``keys_sorted`` over rows 0..n-1."""
    return np.searchsorted(keys_sorted, np.arange(n + 1, dtype=np.int64)).astype(np.int64)


def _orient(ax: F64, ay: F64, bx: F64, by: F64, cx: F64, cy: F64) -> tuple[F64, F64]:
    """Orientation determinant of (a, b, c) and its float64 error bound."""
    left = (bx - ax) * (cy - ay)
    right = (by - ay) * (cx - ax)
    return left - right, _ERRBOUND * (np.abs(left) + np.abs(right))


def _sign(det: F64, bound: F64) -> npt.NDArray[np.int8]:
    """+1/-1 where certain, 0 where the float64 sign cannot be trusted."""
    return (np.where(det > bound, 1, 0) - np.where(det < -bound, 1, 0)).astype(np.int8)


@dataclass(frozen=True, slots=True, eq=False)
class FenceIndex:
    """An immutable membership index over a fixed set of fences. Build with :meth:`build`."""

    fences: tuple[Fence, ...]
    version: int
    ids: tuple[str, ...]
    use: npt.NDArray[np.int8]  # USE_CODES
    org_names: tuple[str, ...]
    org: I32  # index into org_names
    speed_limit_kmh: npt.NDArray[np.float32]  # NaN when the fence carries no limit
    # grid
    x0: float
    y0: float
    dx: float
    dy: float
    nx: int
    ny: int
    # inside cells: CSR cell -> fence
    in_ptr: I64
    in_fence: I32
    # polygon boundary cells: CSR cell -> entry; entry -> edges
    pb_ptr: I64
    pb_fence: I32
    pb_edge_ptr: I64
    pb_rx: F64
    pb_ry: F64
    pb_status: B
    pb_exact: B  # no usable reference point: every pair goes to shapely
    e_ax: F64
    e_ay: F64
    e_bx: F64
    e_by: F64
    e_sr: npt.NDArray[np.int8]
    # circle / corridor boundary cells: CSR cell -> entry; entry -> segments
    db_ptr: I64
    db_fence: I32
    db_seg_ptr: I64
    db_w: F64
    s_ax: F64
    s_ay: F64
    s_bx: F64
    s_by: F64
    geoms: npt.NDArray[Any]  # shapely geometries, for the rare exact fallback

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls, fences: Sequence[Fence], *, version: int = 0, cell_m: float | None = None
    ) -> FenceIndex:
        """Index ``fences``. ``cell_m`` forces the grid cell size (metres); default: automatic."""
        fences = tuple(fences)
        ids = tuple(f.id for f in fences)
        if len(set(ids)) != len(ids):
            raise Misuse("fence ids must be unique")
        nf = len(fences)
        org_names = tuple(sorted({f.org for f in fences}))
        org_pos = {o: i for i, o in enumerate(org_names)}
        geoms = np.empty(nf, dtype=object)
        for i, f in enumerate(fences):
            geoms[i] = f.geometry
        shapely.prepare(geoms)
        use = np.array([USE_CODES[f.use] for f in fences], dtype=np.int8)
        org = np.array([org_pos[f.org] for f in fences], dtype=np.int32)
        limit = np.array(
            [math.nan if f.speed_limit_kmh is None else f.speed_limit_kmh for f in fences],
            dtype=np.float32,
        )

        poly = [i for i, f in enumerate(fences) if f.shape == "polygon"]
        dist = [i for i, f in enumerate(fences) if f.shape != "polygon"]
        edges = _polygon_edges(geoms, np.array(poly, dtype=np.int64))
        segs = _distance_segments(fences, dist)

        # Grid over every fence's bounding box (circle/corridor outlines include the width).
        if nf:
            bounds = shapely.bounds(geoms)
            xmin, ymin = float(bounds[:, 0].min()), float(bounds[:, 1].min())
            xmax, ymax = float(bounds[:, 2].max()), float(bounds[:, 3].max())
            if segs[0].size:
                w = segs[4]
                kx, ky = metres_per_degree(np.clip(np.abs(segs[1]) + 1.0, 0.0, 89.0))
                xmin = min(xmin, float((np.minimum(segs[0], segs[2]) - 1.01 * w / kx).min()))
                xmax = max(xmax, float((np.maximum(segs[0], segs[2]) + 1.01 * w / kx).max()))
                ymin = min(ymin, float((np.minimum(segs[1], segs[3]) - 1.01 * w / ky).min()))
                ymax = max(ymax, float((np.maximum(segs[1], segs[3]) + 1.01 * w / ky).max()))
        else:
            xmin = ymin = 0.0
            xmax = ymax = 1e-3
        xmin -= 10 * EPS_DEG
        ymin -= 10 * EPS_DEG
        xmax += 10 * EPS_DEG
        ymax += 10 * EPS_DEG
        kx0, ky0 = (float(v) for v in metres_per_degree(0.5 * (ymin + ymax)))
        width_m = max((xmax - xmin) * kx0, 1.0)
        height_m = max((ymax - ymin) * ky0, 1.0)
        if cell_m is None:
            target = int(np.clip(4 * (edges[0].size + 4 * segs[0].size), _MIN_CELLS, _MAX_CELLS))
            cell_m = math.sqrt(width_m * height_m / target)
        cell_m = max(cell_m, math.sqrt(width_m * height_m / _MAX_CELLS))
        dx = cell_m / kx0
        dy = cell_m / ky0
        nx = math.floor((xmax - xmin) / dx) + 2
        ny = math.floor((ymax - ymin) / dy) + 2
        grid = (xmin, ymin, dx, dy, nx, ny)
        ncell = nx * ny

        pb = _polygon_boundary(grid, geoms, edges, nf)
        db_in_cells, db_in_fence, db = _distance_cells(grid, segs, nf)
        in_cells, in_fence = _polygon_inside(grid, geoms, np.array(poly, dtype=np.int64), pb, nf)
        in_cells = np.concatenate([in_cells, db_in_cells])
        in_fence = np.concatenate([in_fence, db_in_fence])
        order = np.argsort(in_cells * max(nf, 1) + in_fence, kind="stable")
        in_cells, in_fence = in_cells[order], in_fence[order]

        return cls(
            fences=fences,
            version=version,
            ids=ids,
            use=use,
            org_names=org_names,
            org=org,
            speed_limit_kmh=limit,
            x0=xmin,
            y0=ymin,
            dx=dx,
            dy=dy,
            nx=nx,
            ny=ny,
            in_ptr=_ptr(in_cells, ncell),
            in_fence=in_fence.astype(np.int32),
            pb_ptr=_ptr(pb["cell"], ncell),
            pb_fence=pb["fence"].astype(np.int32),
            pb_edge_ptr=pb["edge_ptr"],
            pb_rx=pb["rx"],
            pb_ry=pb["ry"],
            pb_status=pb["status"],
            pb_exact=pb["exact"],
            e_ax=pb["ax"],
            e_ay=pb["ay"],
            e_bx=pb["bx"],
            e_by=pb["by"],
            e_sr=pb["sr"],
            db_ptr=_ptr(db["cell"], ncell),
            db_fence=db["fence"].astype(np.int32),
            db_seg_ptr=db["seg_ptr"],
            db_w=db["w"],
            s_ax=db["ax"],
            s_ay=db["ay"],
            s_bx=db["bx"],
            s_by=db["by"],
            geoms=geoms,
        )

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.fences)

    def position(self, fence_id: str) -> int:
        """Index of fence ``fence_id`` in this index's arrays."""
        try:
            return self.ids.index(fence_id)
        except ValueError:
            raise Misuse(f"no fence with id {fence_id!r}") from None

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays (fence geometries not counted)."""
        total = 0
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.dtype != object:
                total += value.nbytes
        return total + 8 * len(self.fences)

    def membership(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[I64, I32]:
        """(point, fence) index pairs for every point inside or on the boundary of every fence.

        ``lon``/``lat`` are WGS-84 degrees of equal length. Pairs are sorted by point, then
        fence. The same answer as ``shapely.covers(fence.geometry, Point(lon, lat))`` for
        polygon fences; see the module docstring for circles and corridors.
        """
        x = np.ascontiguousarray(lon, dtype=np.float64)
        y = np.ascontiguousarray(lat, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise Misuse("lon and lat must be 1-D arrays of the same length")
        nf = max(len(self.fences), 1)
        with np.errstate(invalid="ignore"):
            fx = np.floor((x - self.x0) / self.dx)
            fy = np.floor((y - self.y0) / self.dy)
            ok = (fx >= 0) & (fx < self.nx) & (fy >= 0) & (fy < self.ny)
        pts = np.flatnonzero(ok)
        cell = fy[pts].astype(np.int64) * self.nx + fx[pts].astype(np.int64)

        keys = [self._inside_keys(pts, cell, nf)]
        if self.pb_fence.size:
            keys.append(self._polygon_keys(x, y, pts, cell, nf))
        if self.db_fence.size:
            keys.append(self._distance_keys(x, y, pts, cell, nf))
        # Each part is already sorted by (point, fence): a stable sort merges the runs.
        key = np.sort(np.concatenate(keys), kind="stable")
        return key // nf, (key % nf).astype(np.int32)

    def _inside_keys(self, pts: I64, cell: I64, nf: int) -> I64:
        start = self.in_ptr[cell]
        count = self.in_ptr[cell + 1] - start
        owner, pos = _expand(start, count)
        out: I64 = pts[owner] * nf + self.in_fence[pos]
        return out

    def _polygon_keys(self, x: F64, y: F64, pts: I64, cell: I64, nf: int) -> I64:
        start = self.pb_ptr[cell]
        count = self.pb_ptr[cell + 1] - start
        pair_owner, entry = _expand(start, count)
        pair_pt = pts[pair_owner]
        if pair_pt.size == 0:
            return np.empty(0, dtype=np.int64)
        e_start = self.pb_edge_ptr[entry]
        e_count = self.pb_edge_ptr[entry + 1] - e_start
        row_pair, edge = _expand(e_start, e_count)
        px = x[pair_pt][row_pair]
        py = y[pair_pt][row_pair]
        rx = self.pb_rx[entry][row_pair]
        ry = self.pb_ry[entry][row_pair]
        ax, ay, bx, by = self.e_ax[edge], self.e_ay[edge], self.e_bx[edge], self.e_by[edge]
        sp = _sign(*_orient(ax, ay, bx, by, px, py))
        sr = self.e_sr[edge]
        sa = _sign(*_orient(px, py, rx, ry, ax, ay))
        sb = _sign(*_orient(px, py, rx, ry, bx, by))
        ab = sa * sb
        pr = sp * sr
        cross = (ab == -1) & (pr == -1)
        unsure = ~(cross | (ab == 1) | (pr == 1))
        first = np.cumsum(e_count) - e_count
        parity = np.add.reduceat(cross.astype(np.int32), first) & 1
        inside = self.pb_status[entry] ^ parity.astype(bool)
        unsure_pair = np.logical_or.reduceat(unsure, first) | self.pb_exact[entry]
        if unsure_pair.any():
            which = np.flatnonzero(unsure_pair)
            fence = self.pb_fence[entry[which]]
            inside[which] = shapely.intersects_xy(
                self.geoms[fence], x[pair_pt[which]], y[pair_pt[which]]
            )
        keep = np.flatnonzero(inside)
        out: I64 = pair_pt[keep] * nf + self.pb_fence[entry[keep]]
        return out

    def _distance_keys(self, x: F64, y: F64, pts: I64, cell: I64, nf: int) -> I64:
        start = self.db_ptr[cell]
        count = self.db_ptr[cell + 1] - start
        pair_owner, entry = _expand(start, count)
        pair_pt = pts[pair_owner]
        if pair_pt.size == 0:
            return np.empty(0, dtype=np.int64)
        s_start = self.db_seg_ptr[entry]
        s_count = self.db_seg_ptr[entry + 1] - s_start
        row_pair, seg = _expand(s_start, s_count)
        d = segment_distance_m(
            x[pair_pt][row_pair],
            y[pair_pt][row_pair],
            self.s_ax[seg],
            self.s_ay[seg],
            self.s_bx[seg],
            self.s_by[seg],
        )
        hit = d <= self.db_w[entry][row_pair]
        first = np.cumsum(s_count) - s_count
        inside = np.logical_or.reduceat(hit, first)
        keep = np.flatnonzero(inside)
        out: I64 = pair_pt[keep] * nf + self.db_fence[entry[keep]]
        return out


def membership_reference(
    fences: Sequence[Fence], lon: npt.ArrayLike, lat: npt.ArrayLike
) -> tuple[I64, I32]:
    """Slow scalar reference of :meth:`FenceIndex.membership` (shapely ``covers`` per point)."""
    xs = np.asarray(lon, dtype=np.float64).tolist()
    ys = np.asarray(lat, dtype=np.float64).tolist()
    pi: list[int] = []
    fi: list[int] = []
    for p, (px, py) in enumerate(zip(xs, ys, strict=True)):
        for f, fence in enumerate(fences):
            if fence.covers(px, py):
                pi.append(p)
                fi.append(f)
    return np.array(pi, dtype=np.int64), np.array(fi, dtype=np.int32)


# -- build helpers ----------------------------------------------------------------------------

Grid = tuple[float, float, float, float, int, int]


def _polygon_edges(geoms: npt.NDArray[Any], poly: I64) -> tuple[F64, F64, F64, F64, I64]:
    """Every ring edge of the polygon fences: (ax, ay, bx, by, fence)."""
    if poly.size == 0:
        e = np.empty(0, dtype=np.float64)
        return e, e, e, e, np.empty(0, dtype=np.int64)
    parts, part_of = shapely.get_parts(geoms[poly], return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    same = coord_of[:-1] == coord_of[1:]
    a = coords[:-1][same]
    b = coords[1:][same]
    fence = poly[part_of[ring_of[coord_of[:-1][same]]]]
    real = (a[:, 0] != b[:, 0]) | (a[:, 1] != b[:, 1])  # zero-length edges cross nothing
    return (a[real, 0], a[real, 1], b[real, 0], b[real, 1], fence[real].astype(np.int64))


def _distance_segments(
    fences: Sequence[Fence], dist: list[int]
) -> tuple[F64, F64, F64, F64, F64, I64]:
    """Centre-line segments of circles/corridors: (ax, ay, bx, by, width_m, fence)."""
    rows = [(*s, fences[i].distance_m, i) for i in dist for s in fences[i].segments]
    if not rows:
        e = np.empty(0, dtype=np.float64)
        return e, e, e, e, e, np.empty(0, dtype=np.int64)
    arr = np.array(rows, dtype=np.float64)
    return arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5].astype(np.int64)


def _cell_range(v: F64, origin: float, step: float, n: int) -> I64:
    return np.clip(np.floor((v - origin) / step), 0, n - 1).astype(np.int64)


def _edge_cells(grid: Grid, ax: F64, ay: F64, bx: F64, by: F64) -> tuple[I64, I64]:
    """(edge, cell) for every cell whose closure grown by EPS_DEG an edge may touch.

    Column by column: the edge's y-extent within each column slab, then the rows it spans.
    """
    x0, y0, dx, dy, nx, ny = grid
    xl = np.minimum(ax, bx) - EPS_DEG
    xh = np.maximum(ax, bx) + EPS_DEG
    c0 = _cell_range(xl, x0, dx, nx)
    c1 = _cell_range(xh, x0, dx, nx)
    edge, col = _expand(c0, c1 - c0 + 1)
    sl = np.maximum(x0 + col * dx - EPS_DEG, xl[edge])
    sh = np.minimum(x0 + (col + 1) * dx + EPS_DEG, xh[edge])
    eax, eay, ebx, eby = ax[edge], ay[edge], bx[edge], by[edge]
    run = ebx - eax
    with np.errstate(invalid="ignore", divide="ignore"):
        tl = np.clip(np.where(run != 0, (sl - eax) / run, 0.0), 0.0, 1.0)
        th = np.clip(np.where(run != 0, (sh - eax) / run, 1.0), 0.0, 1.0)
    vertical = run == 0
    tl = np.where(vertical, 0.0, tl)
    th = np.where(vertical, 1.0, th)
    yl = eay + tl * (eby - eay)
    yh = eay + th * (eby - eay)
    r0 = _cell_range(np.minimum(yl, yh) - EPS_DEG, y0, dy, ny)
    r1 = _cell_range(np.maximum(yl, yh) + EPS_DEG, y0, dy, ny)
    slab, row = _expand(r0, r1 - r0 + 1)
    return edge[slab], row * nx + col[slab]


def _polygon_boundary(
    grid: Grid, geoms: npt.NDArray[Any], edges: tuple[F64, F64, F64, F64, I64], nf: int
) -> dict[str, Any]:
    x0, y0, dx, dy, nx, _ny = grid
    ax, ay, bx, by, efence = edges
    edge, cell = _edge_cells(grid, ax, ay, bx, by)
    key = cell * max(nf, 1) + efence[edge]
    order = np.argsort(key, kind="stable")
    key, edge = key[order], edge[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if key.size else np.empty(0, int)
    ekey = key[starts]
    ecell = ekey // max(nf, 1)
    efen = ekey % max(nf, 1)
    edge_ptr = np.r_[starts, key.size].astype(np.int64)
    count = np.diff(edge_ptr)
    row_entry = np.repeat(np.arange(ekey.size, dtype=np.int64), count)
    gax, gay, gbx, gby = ax[edge], ay[edge], bx[edge], by[edge]
    col = ecell % nx
    row = ecell // nx
    rx = np.zeros(ekey.size)
    ry = np.zeros(ekey.size)
    sr = np.zeros(key.size, dtype=np.int8)
    todo = np.ones(ekey.size, dtype=bool)
    for fx, fy in _REF_FRACTIONS:
        cx = x0 + (col + fx) * dx
        cy = y0 + (row + fy) * dy
        det, bound = _orient(gax, gay, gbx, gby, cx[row_entry], cy[row_entry])
        s = _sign(det, bound)
        good = np.logical_and.reduceat(s != 0, edge_ptr[:-1]) if ekey.size else todo
        take = todo & good
        rx[take], ry[take] = cx[take], cy[take]
        rows_take = take[row_entry]
        sr[rows_take] = s[rows_take]
        todo &= ~take
        if not todo.any():
            break
    exact = todo.copy()
    status = np.zeros(ekey.size, dtype=bool)
    usable = np.flatnonzero(~exact)
    if usable.size:
        status[usable] = shapely.contains_xy(geoms[efen[usable]], rx[usable], ry[usable])
    return {
        "cell": ecell.astype(np.int64),
        "fence": efen,
        "edge_ptr": edge_ptr,
        "rx": rx,
        "ry": ry,
        "status": status,
        "exact": exact,
        "ax": gax,
        "ay": gay,
        "bx": gbx,
        "by": gby,
        "sr": sr,
    }


def _polygon_inside(
    grid: Grid, geoms: npt.NDArray[Any], poly: I64, pb: dict[str, Any], nf: int
) -> tuple[I64, I64]:
    """(cell, fence) for the cells no edge touches whose centre is inside the fence.

    Runs of untouched cells along a grid row share one status (no boundary between them),
    so one shapely test per run suffices.
    """
    x0, y0, dx, dy, nx, ny = grid
    if poly.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    bounds = shapely.bounds(geoms[poly])
    c0 = _cell_range(bounds[:, 0] - EPS_DEG, x0, dx, nx)
    c1 = _cell_range(bounds[:, 2] + EPS_DEG, x0, dx, nx)
    r0 = _cell_range(bounds[:, 1] - EPS_DEG, y0, dy, ny)
    r1 = _cell_range(bounds[:, 3] + EPS_DEG, y0, dy, ny)
    width = c1 - c0 + 1
    # One (fence, row) strip per bbox row.
    strip_f, strip_row = _expand(r0, r1 - r0 + 1)
    strip_c0 = c0[strip_f]
    strip_w = width[strip_f]
    # Boundary cells of each strip, as offsets in the strip.
    bkey = pb["fence"].astype(np.int64) * (nx * ny) + pb["cell"]  # fence-major key
    bkey.sort()
    strip_key0 = poly[strip_f] * (nx * ny) + strip_row * nx + strip_c0
    lo = np.searchsorted(bkey, strip_key0)
    hi = np.searchsorted(bkey, strip_key0 + strip_w)
    # Cells of every strip, flagged boundary or not.
    cell_strip, off = _expand(np.zeros_like(strip_w), strip_w)
    is_b = np.zeros(off.size, dtype=bool)
    b_strip, b_pos = _expand(lo, hi - lo)
    strip_first = np.cumsum(strip_w) - strip_w
    is_b[strip_first[b_strip] + (bkey[b_pos] - strip_key0[b_strip])] = True
    # Runs of non-boundary cells: test the first cell of each run.
    free = ~is_b
    prev_free = np.r_[False, free[:-1]]
    new_strip = np.r_[True, cell_strip[1:] != cell_strip[:-1]]
    run_start = free & (~prev_free | new_strip)
    run_id = np.cumsum(run_start) - 1
    rs = np.flatnonzero(run_start)
    if rs.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    s_of = cell_strip[rs]
    cx = x0 + (strip_c0[s_of] + off[rs] + 0.5) * dx
    cy = y0 + (strip_row[s_of] + 0.5) * dy
    fence_of_run = poly[strip_f[s_of]]
    run_in = shapely.contains_xy(geoms[fence_of_run], cx, cy)
    take = np.flatnonzero(free & run_in[np.maximum(run_id, 0)])
    cells = strip_row[cell_strip[take]] * nx + strip_c0[cell_strip[take]] + off[take]
    fence = poly[strip_f[cell_strip[take]]]
    return cells.astype(np.int64), fence.astype(np.int64)


def _distance_cells(
    grid: Grid, segs: tuple[F64, F64, F64, F64, F64, I64], nf: int
) -> tuple[I64, I64, dict[str, Any]]:
    """Classify cells around circle/corridor segments: (inside cells, their fences, boundary)."""
    x0, y0, dx, dy, nx, ny = grid
    ax, ay, bx, by, w, sfence = segs
    empty_i = np.empty(0, dtype=np.int64)
    empty_f = np.empty(0, dtype=np.float64)
    none = {
        "cell": empty_i,
        "fence": empty_i,
        "seg_ptr": np.zeros(1, dtype=np.int64),
        "w": empty_f,
        "ax": empty_f,
        "ay": empty_f,
        "bx": empty_f,
        "by": empty_f,
    }
    if ax.size == 0:
        return empty_i, empty_i, none
    kx, ky = metres_per_degree(np.clip(np.maximum(np.abs(ay), np.abs(by)) + 0.5, 0.0, 89.0))
    _, ky_mid = metres_per_degree(0.5 * (ay + by))
    gx = 1.01 * w / kx + EPS_DEG
    gy = 1.01 * w / np.minimum(ky, ky_mid) + EPS_DEG
    c0 = _cell_range(np.minimum(ax, bx) - gx, x0, dx, nx)
    c1 = _cell_range(np.maximum(ax, bx) + gx, x0, dx, nx)
    r0 = _cell_range(np.minimum(ay, by) - gy, y0, dy, ny)
    r1 = _cell_range(np.maximum(ay, by) + gy, y0, dy, ny)
    wc = c1 - c0 + 1
    seg, k = _expand(np.zeros_like(wc), wc * (r1 - r0 + 1))
    col = c0[seg] + k % wc[seg]
    row = r0[seg] + k // wc[seg]
    cx: F64 = (x0 + (col + 0.5) * dx).astype(np.float64)
    cy: F64 = (y0 + (row + 0.5) * dy).astype(np.float64)
    d = segment_distance_m(cx, cy, ax[seg], ay[seg], bx[seg], by[seg])
    ckx, cky = metres_per_degree(cy)
    half_diag = 0.5 * np.hypot((dx + 2 * EPS_DEG) * ckx, (dy + 2 * EPS_DEG) * cky)
    ws = w[seg]
    margin = 1e-3 * half_diag + 1e-4 * ws + 1e-3
    full = d + half_diag + margin < ws
    touch = d - half_diag - margin <= ws
    cell = row * nx + col
    nfm = max(nf, 1)
    key = cell * nfm + sfence[seg]
    # inside: any segment covers the whole cell
    in_key = np.unique(key[full])
    # boundary: touched, not inside
    tkey = key[touch]
    tseg = seg[touch]
    drop = np.isin(tkey, in_key)
    tkey, tseg = tkey[~drop], tseg[~drop]
    order = np.argsort(tkey, kind="stable")
    tkey, tseg = tkey[order], tseg[order]
    starts = np.flatnonzero(np.r_[True, tkey[1:] != tkey[:-1]]) if tkey.size else empty_i
    ekey = tkey[starts]
    efence = ekey % nfm
    bound = {
        "cell": (ekey // nfm).astype(np.int64),
        "fence": efence,
        "seg_ptr": np.r_[starts, tkey.size].astype(np.int64),
        "w": w[tseg[starts]] if starts.size else empty_f,
        "ax": ax[tseg],
        "ay": ay[tseg],
        "bx": bx[tseg],
        "by": by[tseg],
    }
    return in_key // nfm, in_key % nfm, bound


class LiveFences:
    """The current :class:`FenceIndex`, replaced copy-on-write when the fence set changes.

    Readers take ``live.index`` once per batch and use that immutable snapshot; writers
    (``add``/``replace``/``delete``/``replace_all``) build a new index off to the side and
    swap the reference, so a batch is never evaluated against a half-built index and never
    waits for a rebuild. Writers are serialised by a lock. A build takes up to a few hundred
    milliseconds: an asyncio caller should run writers in a thread (``asyncio.to_thread``).
    """

    def __init__(self, fences: Sequence[Fence] = (), *, cell_m: float | None = None) -> None:
        self._lock = threading.Lock()
        self._cell_m = cell_m
        self._index = FenceIndex.build(fences, version=0, cell_m=cell_m)

    @property
    def index(self) -> FenceIndex:
        """The current snapshot (attribute read: atomic)."""
        return self._index

    @property
    def version(self) -> int:
        return self._index.version

    def _swap(self, fences: Sequence[Fence]) -> FenceIndex:
        new = FenceIndex.build(fences, version=self._index.version + 1, cell_m=self._cell_m)
        self._index = new
        return new

    def add(self, fence: Fence) -> FenceIndex:
        """Add a fence; ``Misuse`` if its id exists."""
        with self._lock:
            if fence.id in self._index.ids:
                raise Misuse(f"fence {fence.id!r} already exists; use replace()")
            return self._swap([*self._index.fences, fence])

    def replace(self, fence: Fence) -> FenceIndex:
        """Replace the fence with the same id (keeps its position); ``Misuse`` if absent."""
        with self._lock:
            pos = self._index.position(fence.id)
            fences = list(self._index.fences)
            fences[pos] = fence
            return self._swap(fences)

    def delete(self, fence_id: str) -> FenceIndex:
        """Delete a fence by id; ``Misuse`` if absent."""
        with self._lock:
            pos = self._index.position(fence_id)
            fences = list(self._index.fences)
            del fences[pos]
            return self._swap(fences)

    def replace_all(self, fences: Sequence[Fence]) -> FenceIndex:
        with self._lock:
            return self._swap(fences)
