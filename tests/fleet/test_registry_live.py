"""The registry changes live: indices stay, terminals move, changes are told."""

from __future__ import annotations

import pytest

from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry


def reg() -> Registry:
    orgs = OrgTree.from_config(
        [OrgConfig(id="c", name="市"), OrgConfig(id="d", name="县", parent="c")]
    )
    return Registry([VehicleConfig(id="a", plate="川X00001", terminal="1001", org="c")], orgs)


def test_upsert_keeps_indices_and_moves_terminals() -> None:
    r = reg()
    v0 = r.version
    i = r.upsert(VehicleConfig(id="b", plate="川X00002", terminal="1002", org="d", status="封存"))
    assert i == 1 and r.by_terminal("1002") == 1 and bool(r.sealed[1]) and r.org_of(1) == "d"
    assert r.changed_since(v0) == [1] and r.changed_since(r.version) == []
    with pytest.raises(ValueError, match="carried by a"):
        r.upsert(VehicleConfig(id="c", plate="川X00003", terminal="1001", org="c"))
    r.upsert(r.vehicles[0].model_copy(update={"status": "已处置"}))  # disposed: terminal free
    assert r.by_terminal("1001") is None and not r.expected[0] and r.by_id("a") == 0
    assert r.upsert(VehicleConfig(id="c", plate="川X00003", terminal="1001", org="c")) == 2
    assert r.by_terminal("1001") == 2 and len(r) == 3
    assert r.changed_since(v0) == [0, 1, 2]


def test_upsert_many_appends_at_once() -> None:
    r = reg()
    new = [
        VehicleConfig(id=f"n{k}", plate=f"川Y{k:05d}", terminal=f"2{k:04d}", org="d")
        for k in range(5)
    ]
    v0 = r.version
    assert r.upsert_many([*new, r.vehicles[0]]) == [1, 2, 3, 4, 5, 0]
    assert r.org_index.tolist() == [0, 1, 1, 1, 1, 1] and r.by_terminal("20003") == 4
    assert r.changed_since(v0) == [0, 1, 2, 3, 4, 5]
