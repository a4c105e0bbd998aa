"""运行费用 in Debian's chromium against a real uvicorn, SQLite history and records: import a
fuel statement with one bad row, see the row reported with its line and reason, the month's
costs and the anomaly on the page, and the costs on the vehicle's record (一车一档)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from fleet.batch import PositionBatch
from store.config import StoreConfig
from store.records import RecordStore, load_fleet
from tests.web.pagekit import serve, wait_js
from tests.web.viewkit import USERS, log_in_as, open_page, rows

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/costs-shots")
ZONE = ZoneInfo("Asia/Shanghai")


def _moment(now_ms: int) -> dt.datetime:
    """Half an hour ago, kept inside this month (the page opens on this month)."""
    now = dt.datetime.fromtimestamp(now_ms / 1000, ZONE)
    at = now - dt.timedelta(minutes=30)
    if at.month != now.month:
        at = now.replace(day=1, hour=0, minute=1, second=0, microsecond=0)
    return at.replace(second=0, microsecond=0)


async def test_import_a_statement_and_see_the_costs(chromium: Any, tmp_path: Path) -> None:
    SHOTS.mkdir(exist_ok=True)
    async with serve(tmp_path, n=5, users=USERS) as served, open_page(chromium) as page:
        now = int(time.time() * 1000)
        store = RecordStore(StoreConfig(), path=str(tmp_path / "records.db"))
        await store.open()
        await load_fleet(store, served.ctx.registry, served.ctx.config.vehicles, now)
        car = await store.vehicle("V00001")
        assert car is not None
        await store.put_vehicle(
            car.model_copy(update={"fuel_card": "9000123", "fuel_tank_l": 50.0}), by="t", at=now
        )
        served.ctx.vehicle_records = store
        at = _moment(now)
        t0 = int(at.timestamp() * 1000)
        n = 121  # 20 minutes at 36 km/h from the station, a point every 10 s
        moving = np.r_[np.ones(n - 1, bool), False]
        await served.ctx.history.write_positions(
            PositionBatch.from_columns(
                vehicle=np.full(n, served.ctx.registry.by_id("V00001"), np.int32),
                ts=t0 + np.arange(n, dtype=np.int64) * 10_000,
                lat=30.36 + np.arange(n) * 0.0009,
                lon=np.full(n, 106.20),
                speed=np.where(moving, 36.0, 0.0).astype(np.float32),
                acc=moving,
            )
        )
        when = at.strftime("%Y-%m-%d %H:%M:%S")
        csv = (
            "加油卡号,车牌号,加油站,交易时间,加油量(升),油品,金额(元),加油站纬度,加油站经度\n"
            f"9000123,川X00001,武胜城南站,{when},40,92#,300,30.36,106.20\n"
            f"9000123,川X99999,武胜城南站,{when},30,92#,225,30.36,106.20\n"
            f"9000123,川X00001,武胜城南站,{when[:-2]}30,60,92#,450,30.36,106.20\n"
        ).encode()
        try:
            await log_in_as(page, served.url, "adm")
            await page.goto(served.url + "/#/costs")
            await page.wait_for_selector("#costs-rows")
            await page.set_input_files(
                "#costs-file",
                files=[{"name": "中石油11月.csv", "mimeType": "text/csv", "buffer": csv}],
            )
            await page.wait_for_selector("#costs-bad")
            [bad] = await rows(page, "#costs-bad").all()
            text = await bad.inner_text()
            assert "3" in text.split()[0] and "川X99999 不在车辆档案中" in text
            assert "新增 2 条" in await page.locator("#costs-result").inner_text()
            await wait_js(
                page,
                "document.querySelector('#costs-total')?.textContent.includes('750.00')",
            )
            unit = rows(page, "#costs-rows").filter(has_text="武胜县")
            await unit.wait_for()
            assert "750.00" in await unit.inner_text()
            anomaly = rows(page, "#costs-anomalies").filter(has_text="加油量超过油箱容积")
            await anomaly.wait_for()
            assert "60 升" in await anomaly.inner_text()
            await page.screenshot(path=str(SHOTS / "costs-zh.png"), full_page=True)

            # English is complete: the same page in English, then back to Chinese.
            await page.click(".lang-switch")
            await page.locator(".costs-head h2", has_text="Running costs").wait_for()
            await page.locator(
                "#costs-anomalies", has_text="More fuel than the tank holds"
            ).wait_for()
            await page.screenshot(path=str(SHOTS / "costs-en.png"), full_page=True)
            await page.click(".lang-switch")
            await page.locator(".costs-head h2", has_text="运行费用").wait_for()
            # The vehicle's record shows its costs.
            await page.goto(served.url + "/#/vehicles")
            row = rows(page, "#vehicles-table").filter(has_text="川X00001")
            await row.wait_for()
            await row.locator(".veh-view").click()
            await page.locator("#veh-record .el-tabs__item", has_text="运行费用").click()
            await wait_js(
                page,
                "document.querySelector('#veh-costs-total')?.textContent.includes('750.00')",
            )
            assert await rows(page, "#veh-costs-items").count() == 2
            assert "加油量超过油箱容积" in await page.locator("#veh-costs-anomalies").inner_text()
            await page.screenshot(path=str(SHOTS / "vehicle-costs-zh.png"))
            assert page.errors == []
        finally:
            served.ctx.vehicle_records = None
            await store.close()
