from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import Misuse
from geofence.transitions import Debounce, Transitions, debounce_reference


def _events(tr: Transitions) -> list[tuple[int, int, int, bool, bool]]:
    return list(
        zip(
            tr.row.tolist(),
            tr.vehicle.tolist(),
            tr.ts.tolist(),
            tr.entered.tolist(),
            tr.initial.tolist(),
            strict=True,
        )
    )


def test_jitter_does_not_flap_and_n_points_confirm() -> None:
    d = Debounce(1, min_points=3, min_seconds=None)
    ins = [1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    tr = d.update(np.zeros(len(ins), np.int32), np.arange(len(ins)) * 10_000, ins)
    # initial "entered" at the 3rd point; jitter; "exited" at the 3rd consecutive outside
    assert _events(tr) == [(2, 0, 20_000, True, True), (10, 0, 100_000, False, False)]


def test_t_seconds_confirm_with_sparse_points() -> None:
    d = Debounce(1, min_points=10, min_seconds=60)
    tr = d.update([0, 0, 0, 0], [0, 30_000, 60_000, 90_000], [False, False, False, True])
    assert _events(tr) == [(2, 0, 60_000, False, True)]
    tr = d.update([0, 0], [120_000, 150_000], [True, True])
    assert _events(tr) == [(1, 0, 150_000, True, False)]  # run began at 90 s, in batch 1


def test_state_carries_across_batches_one_point_at_a_time() -> None:
    d = Debounce(2, min_points=2, min_seconds=None)
    seq = [(1, True), (1, True), (0, False), (1, False), (0, False), (1, False)]
    got = []
    for k, (veh, ins) in enumerate(seq):
        got += [(veh, e) for _, veh, _, e, _ in _events(d.update([veh], [k], [ins]))]
    assert got == [(1, True), (0, False), (1, False)]


def test_old_and_duplicate_points_are_ignored() -> None:
    d = Debounce(1, min_points=1, min_seconds=None)
    d.update([0], [1000], [True])
    tr = d.update([0, 0, 0], [500, 1000, 1000], [False, False, False])
    assert len(tr) == 0
    assert d.state[0] == 1


def test_misuse() -> None:
    d = Debounce(2)
    with pytest.raises(Misuse):
        d.update([1, 0], [0, 0], [True, True])
    with pytest.raises(Misuse):
        d.update([0, 0], [5, 4], [True, True])
    with pytest.raises(Misuse):
        d.update([2], [0], [True])
    with pytest.raises(Misuse):
        Debounce(1, min_points=0)
    d.grow(3)
    assert len(d.update([2], [0], [True])) == 0
    assert len(d.update([], [], [])) == 0


rows = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 40), st.booleans()), min_size=0, max_size=25
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rows, min_size=1, max_size=5),
    st.integers(1, 4),
    st.one_of(st.none(), st.sampled_from([0.0, 5.0, 12.0, 30.0])),
)
def test_agrees_with_scalar_reference(
    batches: list[list[tuple[int, int, bool]]], n: int, secs: float | None
) -> None:
    d = Debounce(4, min_points=n, min_seconds=secs)
    prepared = []
    for b in batches:
        b = sorted(b, key=lambda r: (r[0], r[1]))
        prepared.append(([r[0] for r in b], [r[1] * 1000 for r in b], [r[2] for r in b]))
    want = debounce_reference(prepared, min_points=n, min_seconds=secs)
    for (v, t, x), w in zip(prepared, want, strict=True):
        got = _events(d.update(np.array(v, np.int32), np.array(t, np.int64), np.array(x, bool)))
        assert got == w
