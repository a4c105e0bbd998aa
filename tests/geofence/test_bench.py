from __future__ import annotations

import pytest

from geofence.bench import make_workload, run


def test_workload_shape() -> None:
    fences, lon, lat = make_workload(1000)
    assert len(fences) == 1000 and lon.shape == lat.shape == (1000,)
    sizes = sorted(len(f.geometry.exterior.coords) - 1 for f in fences)
    assert sizes[0] == 64 and sizes[-1] == 3000 and sizes.count(3000) == 10


@pytest.mark.slow
def test_quick_bench_is_exact() -> None:
    out = run(quick=True)
    assert out["check"]["identical_to_shapely_covers"]
    pg = out["postgis_st_covers_baseline"]
    assert pg["skipped"] or pg["identical_to_index"]
