"""``fleetwatch rollup``: rebuild the real days, and a "what if" with a lower speed limit
replayed over the same positions, stored beside the real rollup under its name."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from fleet.registry import Registry
from fleetwatch.cli import main
from fleetwatch.config import load_config
from reports.service import ReportQuery, report_json
from store.rollup import rollup_store
from store.sqlite import SQLiteHistory
from tests.reports.conftest import seed

TOML = """
[store]
kind = "sqlite"
sqlite_path = "{db}"

[web]
accounts_path = "{tmp}/accounts.db"

[[orgs]]
id = "city"
name = "广安市"
[[orgs]]
id = "wusheng"
name = "武胜县"
parent = "city"
[[orgs]]
id = "yuechi"
name = "岳池县"
parent = "city"
[[orgs]]
id = "ws-police"
name = "武胜县公安局"
parent = "wusheng"

[[vehicles]]
id = "V1"
plate = "川X10001"
terminal = "10001"
org = "city"
[[vehicles]]
id = "V2"
plate = "川X10002"
terminal = "10002"
org = "wusheng"
[[vehicles]]
id = "V3"
plate = "川X10003"
terminal = "10003"
org = "ws-police"
[[vehicles]]
id = "V4"
plate = "川X10004"
terminal = "10004"
org = "yuechi"
"""


def test_rebuild_and_what_if(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.db"
    real = tmp_path / "real.toml"
    real.write_text(TOML.format(db=db, tmp=tmp_path), encoding="utf-8")
    limit30 = tmp_path / "limit30.toml"
    limit30.write_text(
        TOML.format(db=db, tmp=tmp_path) + "\n[rules.speeding]\ndefault_limit_kmh = 30\n",
        encoding="utf-8",
    )
    cfg = load_config(str(real))
    reg = Registry.from_config(cfg)

    async def prepare() -> None:
        from store.orders import OrderStore, legacy_order

        h = SQLiteHistory(cfg.store)
        await h.open(reg)
        s = await seed(h, reg)
        await h.close()
        orders = OrderStore(cfg.store)  # the rollup reads the order store the web writes
        await orders.open()
        for o in s.orders:
            assert await orders.add(legacy_order(o))
        await orders.close()

    asyncio.run(prepare())
    span = ["--from", "2025-11-24", "--to", "2025-11-26", "--json"]
    assert main(["rollup", "--config", str(real), *span]) == 0
    days = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["day"] for d in days] == ["2025-11-24", "2025-11-25", "2025-11-26"]
    assert all(d["closed"] and d["scenario"] == "real" for d in days)
    assert main(["rollup", "--config", str(real), "--what-if", str(limit30), *span]) == 0
    what = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {d["scenario"] for d in what} == {"limit30"}

    async def read() -> tuple[dict, dict, list[str]]:  # type: ignore[type-arg]
        h = SQLiteHistory(cfg.store)
        await h.open(reg)
        try:
            r = rollup_store(h)
            q = ReportQuery("violations", "city", dt.date(2025, 11, 24), dt.date(2025, 11, 26))
            a = await report_json(r, reg.orgs, {}, q)
            from dataclasses import replace

            b = await report_json(r, reg.orgs, {}, replace(q, scenario="limit30"))
            cov = await report_json(r, reg.orgs, {}, replace(q, name="coverage", level="vehicle"))
            v1 = next(row for row in cov["rows"] if row["vehicle"] == "V1")
            assert (v1["orders"], v1["trips_covered"], v1["trips"]) == (3, 3, 6)
            return a, b, await r.scenarios()
        finally:
            await h.close()

    real_rep, what_rep, scenarios = asyncio.run(read())
    assert scenarios == ["limit30", "real"]
    # the seeded (real) alarms: speeding once per driving vehicle-day, off_hours for even ones
    assert real_rep["totals"]["speeding"] == 9
    # at 30 km/h every trip at 36 km/h is speeding: 2 trips × 3 vehicles × 3 days
    assert what_rep["totals"]["speeding"] == 18
    assert what_rep["scenario"] == "limit30"
