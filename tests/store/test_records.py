"""The record store on real SQLite and real PostgreSQL: records, history, quota, requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from store.config import StoreConfig
from store.records import RecordConflict, RecordStore
from store.records_core import (
    VEHICLE_LABELS,
    DriverRecord,
    VehicleRecord,
    due_reminders,
    first_error,
    quota_table,
    registration_refusal,
)


@pytest.fixture(params=["sqlite", "postgres"])
async def records(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        store = RecordStore(StoreConfig(), path=str(tmp_path / "records.db"))
    else:
        store = RecordStore(request.getfixturevalue("pg_config"))
    await store.open()
    yield store
    await store.close()


def car(i: int, **kw: object) -> VehicleRecord:
    base: dict[str, object] = {
        "id": f"v{i}",
        "plate": f"川X{i:05d}",
        "org": "qx",
        "terminal": f"1380000{i:04d}",
        "vehicle_class": "执法执勤",
    }
    return VehicleRecord.model_validate({**base, **kw})


async def test_history_of_a_change_names_who_when_before_and_after(records: RecordStore) -> None:
    await records.put_vehicle(car(1), by="admin", at=1000)
    diff = await records.put_vehicle(car(1, colour="白色", seats=5), by="li", at=2000)
    assert diff == {"colour": [None, "白色"], "seats": [None, 5]}
    assert await records.put_vehicle(car(1, colour="白色", seats=5), by="li", at=3000) == {}
    hist = await records.history("vehicle", "v1")
    assert [(h["by"], h["at"], h["action"]) for h in hist] == [
        ("li", 2000, "update"),
        ("admin", 1000, "create"),
    ]
    assert hist[0]["before"]["colour"] is None and hist[0]["after"]["colour"] == "白色"
    assert (await records.vehicle("v1")) == car(1, colour="白色", seats=5)


async def test_plate_and_terminal_are_unique_among_cars_in_use(records: RecordStore) -> None:
    await records.put_vehicle(car(1), by="a", at=1)
    with pytest.raises(RecordConflict, match="车牌号"):
        await records.put_vehicle(car(2, plate="川X00001"), by="a", at=2)
    with pytest.raises(RecordConflict, match="终端"):
        await records.put_vehicle(car(2, terminal=car(1).terminal), by="a", at=2)
    await records.put_vehicle(car(1, status="已处置"), by="a", at=3)
    await records.put_vehicle(car(2, terminal=car(1).terminal), by="a", at=4)  # fitted again
    assert [v.id for v in await records.vehicles()] == ["v1", "v2"]


async def test_seeding_is_idempotent_and_never_overwrites(records: RecordStore) -> None:
    assert await records.seed_vehicles([car(1), car(2)], by="config", at=1) == 2
    await records.put_vehicle(car(1, colour="黑色"), by="admin", at=2)
    assert await records.seed_vehicles([car(1), car(2), car(3)], by="config", at=3) == 1
    assert (await records.vehicle("v1")).colour == "黑色"  # type: ignore[union-attr]
    assert len(await records.vehicles()) == 3


async def test_drivers_quota_and_requests(records: RecordStore) -> None:
    d = DriverRecord(
        id="d1", name="王师傅", org="qx", licence_no="510100199001011234", phone="13900000000"
    )
    await records.put_driver(d, by="admin", at=1)
    await records.put_driver(d.model_copy(update={"status": "停用"}), by="admin", at=2)
    assert (await records.driver("d1")).status == "停用"  # type: ignore[union-attr]
    assert [h["action"] for h in await records.history("driver", "d1")] == ["update", "create"]
    await records.set_quota("qx", {"执法执勤": 2, "应急保障": 1}, by="admin", at=3)
    assert await records.quota() == {("qx", "执法执勤"): 2, ("qx", "应急保障"): 1}
    await records.add_request("r1", car(5), by="clerk", at=4)
    assert [r["state"] for r in await records.requests()] == ["pending"]
    assert await records.decide_request("r1", approve=True, by="chief", at=5, register=car(5))
    assert not await records.decide_request("r1", approve=False, by="chief", at=6)
    assert (await records.vehicle("v5")) is not None


def test_quota_refuses_at_the_quota_until_one_is_handed_over() -> None:
    quota = {("qx", "执法执勤"): 2}
    fleet = [car(1), car(2), car(3, status="已处置")]
    refused = registration_refusal(car(4), quota, fleet)
    assert refused is not None and refused["error"] == "over_quota" and refused["actual"] == 2
    fleet[0] = car(1, status="待处置")  # 先移交处置
    assert registration_refusal(car(4), quota, fleet) is None
    assert registration_refusal(car(4, vehicle_class="应急保障"), quota, fleet) is None  # no quota
    assert (
        registration_refusal(car(2, colour="红"), quota, [car(1), car(2)], previous=car(2)) is None
    )
    rows = quota_table(quota, [car(1), car(2), car(3, status="封存")])
    assert [(r.authorised, r.actual, r.over) for r in rows] == [(2, 3, 1)]
    assert quota_table({}, [car(1)])[0].over == 0  # no quota set: nothing is over


def test_checks_answer_in_chinese() -> None:
    with pytest.raises(ValidationError) as exc:
        VehicleRecord.model_validate({"id": "v1", "plate": "ABC", "org": "qx", "terminal": "1"})
    err = first_error(exc.value, VEHICLE_LABELS)
    assert err.field == "plate" and "车牌号格式不对" in err.message
    with pytest.raises(ValidationError) as exc:
        VehicleRecord.model_validate(
            {"id": "v1", "plate": "川X12345", "org": "qx", "terminal": "1", "seats": 0}
        )
    assert first_error(exc.value, VEHICLE_LABELS).message == "核定座位数: 不能小于 1"
    with pytest.raises(ValidationError):
        car(1, vin="LSVAA2180E2123456I")


def test_reminders_within_30_days() -> None:
    today = dt.date(2026, 12, 1)
    v = car(1, insurance_due=dt.date(2026, 12, 20), inspection_due=dt.date(2027, 6, 1))
    d = DriverRecord(
        id="d1",
        name="王",
        org="qx",
        licence_no="510100199001011234",
        licence_expiry=dt.date(2026, 11, 30),
    )
    got = due_reminders([v, car(2, status="已处置", insurance_due=today)], [d], today)
    assert [(r["kind"], r["id"], r["days_left"]) for r in got] == [
        ("insurance", "v1", 19),
        ("licence", "d1", -1),
    ]


async def test_reminders_become_one_info_event_per_due_date(records: RecordStore) -> None:
    from fleet.model import OrgConfig, VehicleConfig
    from fleet.registry import OrgTree, Registry
    from store.records_reminders import reminder_events

    today = dt.date(2026, 12, 1)
    await records.put_vehicle(car(1, insurance_due=dt.date(2026, 12, 20)), by="a", at=1)
    d = DriverRecord(
        id="d1",
        name="王",
        org="qx",
        licence_no="510100199001011234",
        licence_expiry=dt.date(2026, 12, 5),
        vehicles=("v1",),
    )
    await records.put_driver(d, by="a", at=2)
    reg = Registry(
        [VehicleConfig(id="v1", plate="川X00001", terminal="13800000001", org="qx")],
        OrgTree.from_config([OrgConfig(id="qx", name="前锋区")]),
    )
    due = due_reminders(await records.vehicles(), await records.drivers(), today)
    events = reminder_events(due, reg, {"d1": "v1"}, 1_764_547_200_000, "Asia/Shanghai")
    assert [(e.kind, e.severity, e.action, e.detail["kind"]) for e in events] == [
        ("record_due", "info", "close", "insurance"),
        ("record_due", "info", "close", "licence"),
    ]
    again = reminder_events(due, reg, {"d1": "v1"}, 1_764_633_600_000, "Asia/Shanghai")
    assert [e.id for e in again] == [e.id for e in events]  # the next day: the same episodes
