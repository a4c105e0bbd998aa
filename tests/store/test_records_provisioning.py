"""The gateway's provisioning follows the vehicle records (real SQLite), without a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fleet.model import VehicleConfig
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


async def test_fleetwatch_gateway_follows_the_records_of_its_configuration(tmp_path: Path) -> None:
    """The wiring of ``fleetwatch gateway --config``: the records beside its history."""
    from fleetwatch.cli import follow_records_of
    from fleetwatch.config import parse_config

    cfg = parse_config(
        {
            "store": {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")},
            "orgs": [{"id": "c", "name": "市"}],
            "vehicles": [{"id": "v1", "plate": "川X00001", "terminal": "13900000001", "org": "c"}],
        },
        source=str(tmp_path / "f.toml"),
    )
    prov = Provisioning.from_vehicles(cfg.vehicles)
    stop = asyncio.Event()
    task = await follow_records_of(cfg, prov, stop)
    assert task is not None
    records = RecordStore(cfg.store)
    await records.open()
    try:
        car = VehicleRecord(id="n1", plate="川X55555", org="c", terminal="13955555555")
        await records.put_vehicle(car, by="admin", at=1)
        await _until(lambda: prov.get("13955555555") is not None, timeout=3.0)
    finally:
        stop.set()
        await task
        await records.close()
