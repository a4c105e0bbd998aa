"""车辆档案 and 驾驶员档案 in Debian's chromium against a real uvicorn, SQLite history and records:
the registration form refuses a bad plate in Chinese, saves a good one (the car is then in the
registry, live), the record page shows its change history; the driver form checks the phone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from store.config import StoreConfig
from store.records import RecordStore, load_fleet
from tests.web.pagekit import ARTIFACTS, serve
from tests.web.viewkit import USERS, log_in_as, open_page, rows

pytestmark = pytest.mark.browser


async def choose(page: Any, select: str, option: str) -> None:
    await page.locator(f".el-dialog .el-select:has({select})").click()
    await page.locator(
        ".el-select-dropdown:visible .el-select-dropdown__item", has_text=option
    ).first.click()


async def test_register_a_vehicle_and_a_driver_through_the_forms(
    chromium: Any, tmp_path: Path
) -> None:
    async with serve(tmp_path, n=5, users=USERS) as served, open_page(chromium) as page:
        store = RecordStore(StoreConfig(), path=str(tmp_path / "records.db"))
        await store.open()
        await load_fleet(
            store, served.ctx.registry, served.ctx.config.vehicles, int(time.time() * 1000)
        )
        served.ctx.vehicle_records = store
        try:
            await log_in_as(page, served.url, "adm")
            await page.goto(served.url + "/#/vehicles")
            await page.wait_for_selector("#vehicles-table")
            await page.click("#veh-create")
            await page.fill("#veh-id", "N1")
            await page.fill("#veh-plate", "ABC")
            await page.fill("#veh-terminal", "13955555555")
            await page.click("#veh-save")
            err = page.locator(".el-form-item__error", has_text="车牌号格式不对")
            await err.wait_for()
            assert served.ctx.registry.by_id("N1") is None  # nothing sent
            await page.fill("#veh-plate", "川X55555")
            await choose(page, "#veh-class", "执法执勤")
            await page.click("#veh-save")
            row = rows(page, "#vehicles-table").filter(has_text="川X55555")
            await row.wait_for()
            assert "执法执勤" in await row.inner_text() and "在用" in await row.inner_text()
            assert served.ctx.registry.by_terminal("13955555555") is not None

            # A change, then its history on the record page.
            await row.locator(".veh-edit").click()
            await page.fill("#veh-vin", "LSVAA2180E2123456")
            await page.click("#veh-save")
            await page.locator(".el-message--success").first.wait_for()
            await row.locator(".veh-view").click()
            await page.locator("#veh-record .el-tabs__item", has_text="变更记录").click()
            hist = page.locator("#veh-history .el-table__body tr")
            await hist.nth(1).wait_for()
            assert "车辆识别代号：— → LSVAA2180E2123456" in await hist.nth(0).inner_text()
            assert "adm" in await hist.nth(1).inner_text()
            await page.screenshot(path=str(ARTIFACTS / "page-vehicles.png"))
            await page.keyboard.press("Escape")

            # Drivers: a bad phone is refused in Chinese; a good record is saved.
            await page.goto(served.url + "/#/drivers")
            await page.wait_for_selector("#drivers-table")
            await page.click("#drv-create")
            await page.fill("#drv-id", "D1")
            await page.fill("#drv-name", "王师傅")
            await page.fill("#drv-phone", "123")
            await page.fill("#drv-licence", "510100199001011234")
            await page.click("#drv-save")
            await page.locator(".el-form-item__error", has_text="手机号应为 11 位数字").wait_for()
            await page.fill("#drv-phone", "13900000000")
            await page.click("#drv-save")
            await rows(page, "#drivers-table").filter(has_text="王师傅").wait_for()
            assert (await store.driver("D1")) is not None
            assert page.errors == []
        finally:
            served.ctx.vehicle_records = None
            await store.close()
