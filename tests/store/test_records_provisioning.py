"""The gateway's provisioning follows the vehicle records (real SQLite), without a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fleetwatch.config import VehicleConfig
from ingest.jt808.session import Provisioning
from store.config import StoreConfig
from store.records import RecordStore
from store.records_core import VehicleRecord
from store.records_provisioning import follow_records, provisioned


async def _until(pred: object, timeout: float = 2.0) -> float:
    t0 = time.monotonic()
    while not pred():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout:
            raise AssertionError("not within the time-out")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def test_a_new_terminal_is_provisioned_and_a_disposed_one_is_not(tmp_path: Path) -> None:
    seed = [VehicleConfig(id="v1", plate="川X00001", terminal="13900000001", org="c")]
    prov = Provisioning(provisioned(seed))
    records = RecordStore(StoreConfig(), path=str(tmp_path / "h.db"))
    await records.open()
    stop = asyncio.Event()
    task = asyncio.create_task(follow_records(prov, records, seed, stop, interval_s=0.1))
    try:
        car = VehicleRecord(id="n1", plate="川X55555", org="c", terminal="13955555555")
        await records.put_vehicle(car, by="admin", at=1)
        took = await _until(lambda: prov.get("013955555555") is not None)
        assert took < 1.0
        assert prov.get("13900000001") is not None  # the configuration's stay
        await records.put_vehicle(car.model_copy(update={"status": "已处置"}), by="admin", at=2)
        await _until(lambda: prov.get("13955555555") is None)
    finally:
        stop.set()
        await task
        await records.close()
