from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from shapely.geometry import Point, box

from fleet.errors import Misuse
from geofence.fence import Fence
from geofence.index import USE_CODES, FenceIndex, LiveFences, membership_reference
from tests.geofence.conftest import make_fences, special_points


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    assert a[0].dtype == np.int64 and a[1].dtype == np.int32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.fixture(scope="module")
def index(fences: list[Fence]) -> FenceIndex:
    return FenceIndex.build(fences)


def test_random_points_agree_with_shapely(fences: list[Fence], index: FenceIndex) -> None:
    rng = np.random.default_rng(11)
    x = rng.uniform(106.53, 106.68, 2500)
    y = rng.uniform(30.43, 30.57, 2500)
    got = index.membership(x, y)
    _same(got, membership_reference(fences, x, y))
    assert got[0].size > 500  # the test exercises many memberships


def test_edges_vertices_and_holes_agree_with_shapely(
    fences: list[Fence], index: FenceIndex
) -> None:
    x, y = special_points(fences)
    got = index.membership(x, y)
    _same(got, membership_reference(fences, x, y))
    # covers semantics: every vertex is in its own fence
    poly_ids = {i for i, f in enumerate(fences) if f.shape == "polygon"}
    vertex_hits = set(got[1].tolist())
    assert poly_ids <= vertex_hits


def test_on_edge_counts_as_inside_and_hole_as_outside() -> None:
    square = box(0.0, 0.0, 1.0, 1.0).difference(box(0.25, 0.25, 0.75, 0.75))
    fence = Fence.polygon("sq", "square", "o", "lot", square)
    idx = FenceIndex.build([fence], cell_m=3000.0)
    x = np.array([0.5, 1.0, 0.0, 0.5, 0.25, 0.5, 0.1, 1.5])
    y = np.array([0.0, 0.5, 0.0, 0.5, 0.5, 0.25, 0.1, 0.5])
    p, _ = idx.membership(x, y)
    assert p.tolist() == [0, 1, 2, 4, 5, 6]  # edge, edge, vertex, (hole), hole ring x2, inside


def test_grid_aligned_fences_agree(index: FenceIndex, fences: list[Fence]) -> None:
    # Points on a fine lattice of round coordinates hit rectangle edges, corners and
    # cell centres exactly.
    gx, gy = np.meshgrid(np.arange(106.57, 106.66, 0.0025), np.arange(30.47, 30.56, 0.0025))
    x, y = gx.ravel(), gy.ravel()
    _same(index.membership(x, y), membership_reference(fences, x, y))


def test_cell_sizes_do_not_change_answers(fences: list[Fence]) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(106.53, 106.68, 800)
    y = rng.uniform(30.43, 30.57, 800)
    sx, sy = special_points(fences)
    x, y = np.r_[x, sx[::3]], np.r_[y, sy[::3]]
    want = membership_reference(fences, x, y)
    for cell in (40.0, 333.0, 2500.0, 50_000.0):
        _same(FenceIndex.build(fences, cell_m=cell).membership(x, y), want)


def test_nan_empty_and_far_points(index: FenceIndex) -> None:
    _same(
        index.membership(np.empty(0), np.empty(0)), (np.empty(0, np.int64), np.empty(0, np.int32))
    )
    x = np.array([np.nan, 106.6, np.inf, 0.0, -np.inf])
    y = np.array([30.5, np.nan, 30.5, 0.0, 30.5])
    p, f = index.membership(x, y)
    assert p.size == 0 and f.size == 0
    with pytest.raises(Misuse):
        index.membership(np.zeros(2), np.zeros(3))


def test_empty_index() -> None:
    idx = FenceIndex.build([])
    p, _ = idx.membership(np.array([106.6]), np.array([30.5]))
    assert p.size == 0 and len(idx) == 0


finite_lon = st.floats(106.53, 106.68, allow_nan=False)
finite_lat = st.floats(30.43, 30.57, allow_nan=False)
coord_lon = st.one_of(finite_lon, st.just(np.nan), st.sampled_from([106.6, 106.58, 106.62]))
coord_lat = st.one_of(finite_lat, st.just(np.nan), st.sampled_from([30.5, 30.48, 30.52]))


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 40), elements=coord_lon),
    st.data(),
)
def test_hypothesis_agrees_with_reference(lon: np.ndarray, data: st.DataObject) -> None:
    lat = data.draw(hnp.arrays(np.float64, lon.shape, elements=coord_lat))
    fences = _FENCES
    _same(_INDEX.membership(lon, lat), membership_reference(fences, lon, lat))


_FENCES = make_fences()
_INDEX = FenceIndex.build(_FENCES)


def test_per_fence_arrays(index: FenceIndex, fences: list[Fence]) -> None:
    assert index.ids == tuple(f.id for f in fences)
    assert index.use.dtype == np.int8
    assert index.use[index.position("r1")] == USE_CODES["speed_zone"]
    assert index.speed_limit_kmh.dtype == np.float32
    assert index.speed_limit_kmh[index.position("r1")] == 40.0
    assert np.isnan(index.speed_limit_kmh[index.position("p0")])
    assert index.org_names[index.org[index.position("p1")]] == "org1"
    assert index.nbytes > 0
    with pytest.raises(Misuse):
        index.position("nope")


def test_invalid_polygon_is_repaired_and_exact() -> None:
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])
    f = Fence.polygon("b", "bowtie", "o", "forbidden", bowtie)
    assert f.geometry.is_valid
    idx = FenceIndex.build([f])
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-0.1, 1.1, 500), rng.uniform(-0.1, 1.1, 500)
    _same(idx.membership(x, y), membership_reference([f], x, y))


def test_duplicate_ids_rejected() -> None:
    f = Fence.polygon("a", "a", "o", "lot", box(0, 0, 1, 1))
    with pytest.raises(Misuse):
        FenceIndex.build([f, f])


def test_live_fences_update_while_batches_flow(fences: list[Fence]) -> None:
    base = fences[:10]
    live = LiveFences(base)
    rng = np.random.default_rng(2)
    x = rng.uniform(106.53, 106.68, 3000)
    y = rng.uniform(30.43, 30.57, 3000)
    stop = threading.Event()
    errors: list[BaseException] = []
    snapshots: dict[int, tuple[FenceIndex, np.ndarray, np.ndarray]] = {}

    def reader() -> None:
        try:
            while not stop.is_set():
                idx = live.index  # one snapshot per batch
                p, f = idx.membership(x, y)
                snapshots.setdefault(idx.version, (idx, p, f))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    new = Fence.polygon("new", "new lot", "org0", "lot", box(106.59, 30.49, 106.61, 30.51))
    live.add(new)
    live.replace(
        Fence.polygon("new", "moved lot", "org0", "lot", box(106.60, 30.50, 106.62, 30.52))
    )
    live.delete(base[0].id)
    for f in fences[10:]:
        live.add(f)
        time.sleep(0.01)  # let the readers see intermediate versions
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert live.version == 3 + len(fences[10:])
    final = live.index
    assert final.ids[-1] == fences[-1].id and base[0].id not in final.ids
    assert final.fences[final.position("new")].name == "moved lot"
    # Every snapshot a reader used gave the exact answer for its own fence set.
    assert len(snapshots) >= 2
    for version in sorted(snapshots)[:: max(1, len(snapshots) // 4)]:
        snap, sp, sf = snapshots[version]
        keep = sp < 300
        _same((sp[keep], sf[keep]), membership_reference(snap.fences, x[:300], y[:300]))
    sub_x, sub_y = x[:400], y[:400]
    _same(final.membership(sub_x, sub_y), membership_reference(final.fences, sub_x, sub_y))
    with pytest.raises(Misuse):
        live.add(new)
    with pytest.raises(Misuse):
        live.delete("nope")


def test_point_in_fence_semantics_match_covers(fences: list[Fence]) -> None:
    f = fences[0]
    c = shapely.get_coordinates(f.geometry)[0]
    assert f.covers(float(c[0]), float(c[1])) == f.geometry.covers(Point(c))
