"""The simulated city lies in Guang'an's real boundary; only the out-of-area trip leaves it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pytest
import shapely

from geofence.boundaries import city_outline
from simulator.city import build_city
from simulator.fleet import Fleet
from simulator.plan import DAY
from simulator.run import DEFAULT_SCENARIO, _day_start
from simulator.scenario import fleet_config

DAY0 = _day_start(dt.date(2026, 11, 24))  # a Tuesday


def test_the_allowed_region_is_the_real_city_boundary() -> None:
    doc = fleet_config(DEFAULT_SCENARIO)
    [city] = [f for f in doc["fences"] if f["use"] == "allowed_region"]
    ring = shapely.Polygon(city["ring"])
    outline = city_outline()
    assert len(city["ring"]) > 2000  # not a square
    assert shapely.area(shapely.symmetric_difference(ring, outline)) < 1e-9 * outline.area
    # Lots and banned places are inside it.
    for f in doc["fences"]:
        if f["use"] != "allowed_region":
            pts = f["ring"] if "ring" in f else [f["center"]]
            assert all(outline.covers(shapely.Point(p)) for p in pts), f["id"]


@pytest.mark.parametrize("seed", [1, 3])
def test_only_the_out_of_area_trips_leave_the_city(seed: int) -> None:
    # …and the out-of-city trip under an order naming the wrong city (order_mismatch)
    spec = replace(DEFAULT_SCENARIO, vehicles=40, seed=seed)
    fleet = Fleet(spec, DAY0)
    cols = fleet.step(DAY0 + DAY)
    outside = ~shapely.intersects_xy(city_outline(), cols["lon"], cols["lat"])
    out_kinds = ("out_of_area", "order_mismatch")
    leavers = {v.vehicle for v in fleet.violations(DAY0 + DAY) if v.kind in out_kinds}
    assert len(leavers) == 3
    assert set(np.unique(cols["vehicle"][outside]).tolist()) == leavers
    for v in fleet.violations(DAY0 + DAY):
        if v.kind not in out_kinds:
            continue
        rows = cols["vehicle"] == v.vehicle
        out_ts = cols["ts"][rows & outside]
        # Outside exactly during the recorded violation (one report interval of slack).
        assert out_ts.min() >= v.start_ms and out_ts.max() <= v.end_ms
        assert out_ts.min() - v.start_ms <= 10_000 and v.end_ms - out_ts.max() <= 10_000
        assert v.end_ms - v.start_ms > 10 * 60_000  # the stay out there


def test_trips_stay_on_the_grid_inside_the_boundary() -> None:
    city = build_city(30.456, 106.633, 15.0, 8)
    fleet = Fleet(replace(DEFAULT_SCENARIO, vehicles=10, schedule="always", seed=5), DAY0)
    cols = fleet.step(DAY0 + DAY // 4)
    assert shapely.intersects_xy(city_outline(), cols["lon"], cols["lat"]).all()
    # Moving points lie on grid lines (roads), up to the GPS noise.
    x = (cols["lon"] - city.center_lon) * 111_320.0 * np.cos(np.radians(city.center_lat))
    y = (cols["lat"] - city.center_lat) * 111_320.0
    m = cols["acc"]
    off_x = np.abs(x[m] - np.round(x[m] / city.block_m) * city.block_m)
    off_y = np.abs(y[m] - np.round(y[m] / city.block_m) * city.block_m)
    assert (np.minimum(off_x, off_y) < 30.0).mean() > 0.99


def test_route_inside_agrees_with_the_polygon() -> None:
    """The disk short cut of route_inside never changes its answer."""
    city = build_city(30.456, 106.633, 15.0, 8)
    rng = np.random.default_rng(9)
    assert city.safe_m > 10_000
    for _ in range(300):
        pts = [tuple(p) for p in rng.uniform(-25_000, 25_000, (int(rng.integers(1, 5)), 2))]
        geom = shapely.Point(pts[0]) if len(pts) == 1 else shapely.LineString(pts)
        assert city.route_inside(pts) == city.inner.covers(geom)
