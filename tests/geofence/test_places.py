"""Place names offline: the vectorized lookup agrees with its scalar reference; texts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.boundaries import districts
from geofence.config import PlaceConfig
from geofence.fence import Fence
from geofence.places import Gazetteer, lookup_scalar, place_text
from tests.geofence.conftest import make_fences


@pytest.fixture(scope="module")
def landmarks() -> list[Fence]:
    return [
        *make_fences(seed=11, n=8),
        Fence.circle("ktv", "某KTV", "ga", "forbidden", (106.225, 30.350), 150.0),
        Fence.corridor("road", "某路段", "ga", "forbidden", [(106.2, 30.3), (106.25, 30.32)], 30.0),
    ]


@pytest.fixture(scope="module")
def gaz(landmarks: list[Fence]) -> Gazetteer:
    return Gazetteer.build(districts(), landmarks)


def test_a_point_in_wusheng_near_the_ktv(gaz: Gazetteer) -> None:
    # 300 m north of the KTV's rim (150 m radius): 450 m from its centre.
    lat = 30.350 + 450.0 / 110_860.0
    found = gaz.lookup([106.225], [lat])
    assert gaz.place(found, 0) == {
        "text": "武胜县 · 距 某KTV 300 米",
        "district": "武胜县",
        "township": None,
        "near": {"name": "某KTV", "distance_m": 300},
    }
    assert gaz.text(found, 0, "en") == "Wusheng County · 300 m from 某KTV"


def test_inside_a_landmark_and_outside_the_city(gaz: Gazetteer) -> None:
    found = gaz.lookup([106.225, 104.0], [30.350, 30.6])
    assert gaz.text(found, 0) == "武胜县 · 某KTV 内"
    assert gaz.text(found, 1) == "广安市外"
    assert gaz.text(found, 1, "en") == "outside Guang'an"
    assert gaz.near(found, 1) is None


@pytest.mark.parametrize(
    ("m", "zh", "en"),
    [
        (0.4, "距 X 0 米", "0 m from X"),
        (87.0, "距 X 87 米", "87 m from X"),
        (304.0, "距 X 300 米", "300 m from X"),
        (1250.0, "距 X 1.2 公里", "1.2 km from X"),
        (3000.0, "距 X 3 公里", "3 km from X"),
    ],
)
def test_distance_words(m: float, zh: str, en: str) -> None:
    assert place_text("武胜县", None, "X", m) == f"武胜县 · {zh}"
    assert place_text("武胜县", "沿口镇", "X", m, "zh") == f"武胜县 沿口镇 · {zh}"
    assert place_text("武胜县", None, "X", m, "en") == f"Wusheng County · {en}"


lons = st.floats(105.9, 107.35, allow_nan=False)
lats = st.floats(29.95, 30.9, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(lons, lats), min_size=1, max_size=20),
    st.floats(50.0, 20_000.0),
    st.floats(0.0, 5_000.0),
)
def test_vectorized_agrees_with_scalar(
    landmarks: list[Fence], pts: list[tuple[float, float]], near_max: float, snap: float
) -> None:
    cfg = PlaceConfig(near_max_m=near_max, district_snap_m=snap)
    gaz = Gazetteer.build(districts(), landmarks, cfg)
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    found = gaz.lookup(x, y)
    for i, (lon, lat) in enumerate(pts):
        d, n, m = lookup_scalar(districts(), landmarks, lon, lat, cfg)
        assert found.district[i] == d
        if n < 0:
            assert found.near[i] == -1 and math.isnan(found.near_m[i])
        else:
            assert found.near_m[i] == pytest.approx(m, abs=1e-6)
            # a tie may pick either fence; the distance to the one picked is the same
            assert found.near[i] == n or abs(found.near_m[i] - m) < 1e-6


@pytest.mark.parametrize(("noise_deg", "snap_m"), [(2e-4, 1000.0), (1e-2, 500.0), (1e-2, 2000.0)])
def test_points_on_district_borders_and_slivers_agree(noise_deg: float, snap_m: float) -> None:
    """Near the vertices of the district outlines: on a border, beside a sliver, just
    outside the city (within the snap distance or beyond it)."""
    import shapely

    ds = districts()
    cfg = PlaceConfig(district_snap_m=snap_m)
    c = np.concatenate([shapely.get_coordinates(d.geometry)[::37] for d in ds])
    c = c + np.random.default_rng(5).normal(0.0, noise_deg, c.shape)
    gaz = Gazetteer.build(ds, [], cfg)
    found = gaz.lookup(c[:, 0], c[:, 1])
    want = [lookup_scalar(ds, [], float(x), float(y), cfg)[0] for x, y in c]
    assert found.district.tolist() == want
    assert (found.district >= 0).mean() > 0.5


def test_many_points_in_bounded_memory(gaz: Gazetteer) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(106.0, 107.2, 20_000), rng.uniform(30.0, 30.8, 20_000)
    found = gaz.lookup(x, y)
    assert len(found.district) == 20_000
    assert (found.district >= 0).mean() > 0.5
