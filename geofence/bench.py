"""``fleetwatch bench geofence``: membership throughput on the standard workload.

Workload (issue 4): 1,000 fences — 990 star-shaped polygons of 64 vertices, 200 m to 3 km
across, scattered over a 100 km × 100 km region around Guang'an, plus 10
administrative-size polygons of 3,000 vertices — and 200,000 uniformly random points in
the region. Seeded, so every run sees the same data.

Reported in one run: our index (points/s over the whole batch and in 5,000-point
batches, build time, array memory, peak traced memory during the build), the
fence-by-fence prepared shapely ``contains_xy`` baseline, and a PostGIS GiST
``ST_Covers`` join (skipped with a note when PostgreSQL/PostGIS cannot be reached).
Results are checked against shapely on every point.
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
import shapely
from shapely.geometry import Polygon

from geofence.fence import Fence
from geofence.index import FenceIndex

__all__ = ["make_workload", "run"]

_LON0, _LAT0 = 106.15, 30.05  # south-west corner of the region
_PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=3"


def _star(
    rng: np.random.Generator, lon: float, lat: float, radius_m: float, n: int, wiggle: float
) -> Polygon:
    ang = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    ang = ang + rng.uniform(-0.3, 0.3, n) * (2.0 * np.pi / n)
    r = radius_m * (1.0 - wiggle * rng.uniform(0.0, 1.0, n))
    if n > 500:  # administrative-looking boundary: low-frequency lobes plus noise
        k = np.arange(1, 8)
        phase = rng.uniform(0, 2 * np.pi, k.size)
        amp = rng.uniform(0.02, 0.08, k.size)
        lobes = (amp[:, None] * np.sin(k[:, None] * ang[None, :] + phase[:, None])).sum(0)
        r = radius_m * (1.0 + lobes) * (1.0 - 0.03 * rng.uniform(0.0, 1.0, n))
    kx = 111_320.0 * np.cos(np.radians(lat))
    ky = 110_574.0
    return Polygon(np.column_stack([lon + r * np.cos(ang) / kx, lat + r * np.sin(ang) / ky]))


def make_workload(
    n_points: int = 200_000, seed: int = 4
) -> tuple[list[Fence], np.ndarray, np.ndarray]:
    """(fences, lon, lat) of the standard workload."""
    rng = np.random.default_rng(seed)
    kx = 111_320.0 * np.cos(np.radians(_LAT0 + 0.45))
    span_lon, span_lat = 100_000.0 / kx, 100_000.0 / 110_574.0
    fences: list[Fence] = []
    uses = ("forbidden", "lot", "speed_zone")
    for i in range(990):
        d = rng.uniform(200.0, 3000.0)
        lon = _LON0 + rng.uniform(0.02, 0.98) * span_lon
        lat = _LAT0 + rng.uniform(0.02, 0.98) * span_lat
        use = uses[i % 3]
        fences.append(
            Fence.polygon(
                f"f{i:04d}",
                f"fence {i}",
                f"org{i % 7}",
                use,  # type: ignore[arg-type]
                _star(rng, lon, lat, d / 2.0, 64, 0.3),
                speed_limit_kmh=40.0 if use == "speed_zone" else None,
            )
        )
    for i in range(10):
        lon = _LON0 + rng.uniform(0.25, 0.75) * span_lon
        lat = _LAT0 + rng.uniform(0.25, 0.75) * span_lat
        fences.append(
            Fence.polygon(
                f"a{i:02d}",
                f"district {i}",
                "city",
                "allowed_region",
                _star(rng, lon, lat, rng.uniform(10_000.0, 25_000.0), 3000, 0.0),
            )
        )
    lon_pts = _LON0 + rng.uniform(0.0, 1.0, n_points) * span_lon
    lat_pts = _LAT0 + rng.uniform(0.0, 1.0, n_points) * span_lat
    return fences, lon_pts, lat_pts


def _keys(p: np.ndarray, f: np.ndarray, nf: int) -> np.ndarray:
    return np.sort(p.astype(np.int64) * nf + f.astype(np.int64))


def _shapely_baseline(
    fences: list[Fence], lon: np.ndarray, lat: np.ndarray
) -> tuple[float, np.ndarray]:
    """Fence-by-fence prepared ``contains_xy``: (seconds, sorted pair keys)."""
    geoms = [f.geometry for f in fences]
    for g in geoms:
        shapely.prepare(g)
    nf = len(fences)
    t = time.perf_counter()
    parts = []
    for j, g in enumerate(geoms):
        hit = np.flatnonzero(shapely.contains_xy(g, lon, lat))
        parts.append(hit * nf + j)
    seconds = time.perf_counter() - t
    return seconds, np.sort(np.concatenate(parts))


def _check(
    fences: list[Fence], lon: np.ndarray, lat: np.ndarray, ours: np.ndarray, contains: np.ndarray
) -> dict[str, Any]:
    """Compare with shapely ``covers`` on every point.

    covers = contains ∪ on-boundary, so: every contains pair must be ours, and every pair
    of ours that contains lacks must be covered (checked pair by pair with intersects_xy).
    """
    nf = len(fences)
    missing = np.setdiff1d(contains, ours, assume_unique=True)
    extra = np.setdiff1d(ours, contains, assume_unique=True)
    extra_ok = 0
    if extra.size:
        geoms = np.array([f.geometry for f in fences], dtype=object)
        p, j = extra // nf, extra % nf
        extra_ok = int(shapely.intersects_xy(geoms[j], lon[p], lat[p]).sum())
    return {
        "identical_to_shapely_covers": bool(missing.size == 0 and extra_ok == extra.size),
        "pairs": int(ours.size),
        "pairs_missing": int(missing.size),
        "pairs_on_boundary": int(extra_ok),
        "pairs_wrong": int(missing.size + extra.size - extra_ok),
    }


def _postgis(fences: list[Fence], lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return {"skipped": True, "note": "psycopg not installed"}
    schema = f"bench_geofence_{os.getpid()}"  # parallel runs must not collide
    try:
        with psycopg.connect(_PG_DSN, autocommit=True) as conn:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            except psycopg.Error as exc:
                return {"skipped": True, "note": f"PostGIS not available: {exc}".strip()}
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute(f"CREATE TABLE {schema}.fences (id int, geom geometry(Polygon, 4326))")
            conn.execute(f"CREATE TABLE {schema}.pts (id int, geom geometry(Point, 4326))")
            with conn.cursor() as cur:
                with cur.copy(f"COPY {schema}.fences (id, geom) FROM STDIN") as cp:
                    for j, f in enumerate(fences):
                        cp.write_row((j, "SRID=4326;" + f.geometry.wkt))
                buf = io.StringIO()
                for i, (x, y) in enumerate(zip(lon.tolist(), lat.tolist(), strict=True)):
                    buf.write(f"{i}\tSRID=4326;POINT({x!r} {y!r})\n")
                with cur.copy(f"COPY {schema}.pts (id, geom) FROM STDIN") as cp:
                    cp.write(buf.getvalue())
            conn.execute(f"CREATE INDEX ON {schema}.fences USING gist (geom)")
            conn.execute(f"CREATE INDEX ON {schema}.pts USING gist (geom)")
            conn.execute(f"ANALYZE {schema}.fences")
            conn.execute(f"ANALYZE {schema}.pts")
            t = time.perf_counter()
            rows = conn.execute(
                f"SELECT p.id, f.id FROM {schema}.pts p JOIN {schema}.fences f "
                "ON ST_Covers(f.geom, p.geom)"
            ).fetchall()
            seconds = time.perf_counter() - t
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    except psycopg.OperationalError as exc:
        return {"skipped": True, "note": f"PostgreSQL not reachable: {exc}".strip()}
    nf = len(fences)
    arr = np.array(rows, dtype=np.int64).reshape(-1, 2)
    keys = np.sort(arr[:, 0] * nf + arr[:, 1])
    return {
        "skipped": False,
        "points": int(lon.size),
        "seconds": seconds,
        "points_per_s": lon.size / seconds,
        "keys": keys,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Run the standard workload; ``quick`` uses fewer points and repeats."""
    n_points = 20_000 if quick else 200_000
    repeats = 3 if quick else 7
    fences, lon, lat = make_workload(n_points)
    nf = len(fences)

    builds = []
    index = None
    for _ in range(2 if quick else 3):
        t = time.perf_counter()
        index = FenceIndex.build(fences)
        builds.append(time.perf_counter() - t)
    assert index is not None
    tracemalloc.start()
    FenceIndex.build(fences)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    index.membership(lon, lat)  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p, f = index.membership(lon, lat)
        times.append(time.perf_counter() - t)
    batch = 5_000
    small_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for s in range(0, n_points, batch):
            index.membership(lon[s : s + batch], lat[s : s + batch])
        small_times.append(time.perf_counter() - t)
    ours = p * nf + f
    med = statistics.median(times)
    med_small = statistics.median(small_times)

    base_s, contains = _shapely_baseline(fences, lon, lat)
    check = _check(fences, lon, lat, ours, contains)
    n_pg = n_points // 10 if quick else n_points
    pg = _postgis(fences, lon[:n_pg], lat[:n_pg])
    if not pg["skipped"]:
        pg_n = pg["points"]
        sub = ours[ours // nf < pg_n]
        pg["identical_to_index"] = bool(np.array_equal(pg.pop("keys"), sub))

    return {
        "workload": {
            "fences": nf,
            "polygons_64": 990,
            "polygons_3000": 10,
            "points": n_points,
            "grid": [index.nx, index.ny],
            "cell_m": round(index.dx * 111_320.0 * np.cos(np.radians(_LAT0 + 0.45)), 1),
            "boundary_entries": int(index.pb_fence.size),
            "inside_entries": int(index.in_fence.size),
        },
        "index": {
            "points_per_s": n_points / med,
            "points_per_s_batches_of_5000": n_points / med_small,
            "membership_s_median": med,
            "membership_s_all": times,
            "build_s_median": statistics.median(builds),
            "build_s_all": builds,
            "index_bytes": index.nbytes,
            "build_peak_traced_bytes": peak,
        },
        "shapely_contains_xy_baseline": {
            "seconds": base_s,
            "points_per_s": n_points / base_s,
        },
        "postgis_st_covers_baseline": pg,
        "check": check,
        "speedup_vs_shapely": (n_points / med) / (n_points / base_s),
        "speedup_vs_postgis": (None if pg["skipped"] else (n_points / med) / pg["points_per_s"]),
        "targets_met": bool(
            n_points / med >= 1_000_000
            and statistics.median(builds) < 2.0
            and index.nbytes < 200 * 2**20
            and check["identical_to_shapely_covers"]
        ),
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
