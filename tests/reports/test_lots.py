"""The rollup's "in its own lot" (reports.lots, fence index only) agrees with the rules
engine's lot facts and with its scalar twin, on random points around the demo's lots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fleet.registry import Registry
from fleetwatch.config import parse_config
from reports.lots import in_own_lot, in_own_lot_scalar
from simulator.run import DEFAULT_SCENARIO
from simulator.scenario import fleet_config


def test_in_own_lot_agrees_with_the_engine_and_the_scalar_twin() -> None:
    from geofence.geojson import fences_from_config
    from geofence.index import USE_CODES, LiveFences
    from rules.engine import fence_view, geo_rows

    cfg = parse_config(fleet_config(replace(DEFAULT_SCENARIO, vehicles=60)))
    reg = Registry.from_config(cfg)
    index = LiveFences(fences_from_config(cfg.fences, cfg.fence_files, Path.cwd())).index
    use = np.asarray(index.use)
    lots = np.flatnonzero(use == USE_CODES["lot"])
    assert lots.size, "the demo scenario has lots"
    rng = np.random.default_rng(7)
    n = 4000
    # Half the points near a lot's centre (inside or just outside), half anywhere.
    fcs = fences_from_config(cfg.fences, cfg.fence_files, Path.cwd())
    centres = [(f.geometry.centroid.x, f.geometry.centroid.y) for f in fcs if f.use == "lot"]
    c = np.asarray(centres)[rng.integers(0, len(centres), n)]
    lon = np.where(rng.random(n) < 0.5, c[:, 0] + rng.normal(0, 0.002, n), rng.uniform(106, 107, n))
    lat = np.where(rng.random(n) < 0.5, c[:, 1] + rng.normal(0, 0.002, n), rng.uniform(30, 31, n))
    veh = rng.integers(0, len(reg), n)
    got = in_own_lot(index, reg, veh, lon, lat)
    view = fence_view(index, reg)
    want = geo_rows(view, reg, veh, lon, lat).in_lot | ~view.has_lot[veh]
    assert np.array_equal(got, want)
    assert 0 < got.sum() < n  # both cases occur
    for k in rng.integers(0, n, 300).tolist():
        assert in_own_lot_scalar(index, reg, int(veh[k]), float(lon[k]), float(lat[k])) == got[k]
    assert in_own_lot(None, reg, veh, lon, lat).all()
