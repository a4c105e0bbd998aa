"""Dispatch orders: excuse lookup (scalar and vectorized agree) and the CSV import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.errors import BadRecord, Misuse
from rules.orders import TOKEN_BITS, DispatchOrder, OrderBook, load_orders_csv, parse_orders_csv
from tests.rules.conftest import local_ms, make_registry

TYPES = ["local", "out_of_area", "holiday", "overnight"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(TYPES),
            st.integers(0, 100),
            st.integers(0, 50),
            st.booleans(),
        ),
        max_size=8,
    ),
    st.lists(st.tuples(st.integers(0, 3), st.integers(-5, 160)), max_size=40),
)
def test_vectorized_excuses_equal_scalar(orders: list, rows: list) -> None:
    reg = make_registry(4)
    book = OrderBook(
        DispatchOrder(f"o{k}", f"v{v}", t, a, a + d, approved=ok)
        for k, (v, t, a, d, ok) in enumerate(orders)
    )
    veh = np.array([r[0] for r in rows], dtype=np.int32)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    got = book.excuse_bits(reg, veh, ts)
    assert got.tolist() == [book.excuses_at(f"v{v}", t) for v, t in rows]


def test_each_type_excuses_only_what_it_authorises() -> None:
    book = OrderBook(
        [DispatchOrder("a", "v0", "local", 0, 10), DispatchOrder("b", "v1", "overnight", 0, 10)]
    )
    assert book.excuses_at("v0", 5) == TOKEN_BITS["off_hours.after_hours"]
    assert book.excuses_at("v1", 5) & TOKEN_BITS["parking_violation.night"]
    assert not book.excuses_at("v1", 5) & TOKEN_BITS["out_of_area"]
    assert book.excuses_at("v0", 11) == 0 and book.excuses_at("v2", 5) == 0
    with pytest.raises(Misuse):
        DispatchOrder("x", "v0", "joyride", 0, 1)
    with pytest.raises(Misuse):
        DispatchOrder("x", "v0", "local", 2, 1)


def test_csv_import(tmp_path: Path) -> None:
    reg = make_registry(3)
    path = tmp_path / "orders.csv"
    path.write_text(
        "\ufeffid,vehicle,type,start,end,approved,approved_at\n"
        "A1,川X00001,out_of_area,2026-11-21T08:00,2026-11-21T18:00,是,\n"
        "A2,v2,holiday,2026-10-01T08:00:00+08:00,2026-10-01T12:00:00+08:00,yes,"
        "2026-10-02T09:00\n"
        "A3,v0,local,2026-11-25T19:00,2026-11-25T21:00,no,\n",
        encoding="utf-8",
    )
    orders = load_orders_csv(path, reg)
    assert [(o.id, o.vehicle_id, o.type, o.approved) for o in orders] == [
        ("A1", "v1", "out_of_area", True),
        ("A2", "v2", "holiday", True),
        ("A3", "v0", "local", False),
    ]
    assert orders[0].start == local_ms(2026, 11, 21, 8) and orders[0].end == local_ms(
        2026, 11, 21, 18
    )
    assert orders[1].approved_at == local_ms(2026, 10, 2, 9)
    book = OrderBook(orders)
    assert len(book) == 2  # the unapproved one is not an excuse


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("id,vehicle,type,start\n", "header"),
        (
            "id,vehicle,type,start,end\n1,nobody,local,2026-01-01T00:00,2026-01-01T01:00\n",
            "unknown",
        ),
        ("id,vehicle,type,start,end\n1,v0,picnic,2026-01-01T00:00,2026-01-01T01:00\n", "type"),
        ("id,vehicle,type,start,end\n1,v0,local,yesterday,2026-01-01T01:00\n", "ISO"),
        ("id,vehicle,type,start,end\n1,v0,local,2026-01-02T00:00,2026-01-01T01:00\n", "before"),
        ("id,vehicle,type,start,end,approved\n1,v0,local,2026-01-01,2026-01-02,maybe\n", "yes/no"),
    ],
)
def test_csv_errors_name_the_line(text: str, why: str) -> None:
    with pytest.raises(BadRecord, match=why):
        parse_orders_csv(text, make_registry(2))
