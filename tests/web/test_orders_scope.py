"""Dispatch order ids are per organisation: no county can overwrite, or probe, another's."""

from __future__ import annotations

import httpx

from tests.web.conftest import T0, Built, login

DAY = "2025-11-25"


def csv(*rows: str) -> bytes:
    return ("id,vehicle,type,start,end\n" + "".join(r + "\n" for r in rows)).encode()


async def test_an_import_cannot_overwrite_another_countys_order(
    client: httpx.AsyncClient, built: Built
) -> None:
    ws, yc = await login(client, "ws-op"), await login(client, "yc-op")
    # 岳池 (yuechi) has order YC-001 for its own car V4
    r = await client.post(
        "/api/orders/import", headers=yc, content=csv(f"YC-001,V4,local,{DAY}T08:00,{DAY}T18:00")
    )
    assert r.json()["imported"] == 1
    # 武胜 (wusheng) imports a file using the same id for its car, a row for 岳池's car,
    # a bad row and a good one
    r = await client.post(
        "/api/orders/import",
        headers=ws,
        content=csv(
            f"YC-001,V2,holiday,{DAY}T00:00,{DAY}T23:59",
            f"YC-002,V4,holiday,{DAY}T00:00,{DAY}T23:59",
            f"WS-009,V2,nonsense,{DAY}T00:00,{DAY}T23:59",
            f"WS-010,V3,local,{DAY}T09:00,{DAY}T10:00",
        ),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 2
    assert [x["line"] for x in body["rejected"]] == [3, 4]
    assert body["rejected"][0]["reason"] == "unknown vehicle 'V4'"
    assert "type" in body["rejected"][1]["reason"]
    # 岳池's order is untouched
    [mine] = (await client.get("/api/orders", headers=yc)).json()["orders"]
    assert (mine["id"], mine["vehicle"], mine["type"], mine["org"]) == (
        "YC-001",
        "V4",
        "local",
        "yuechi",
    )
    theirs = {o["id"]: o for o in (await client.get("/api/orders", headers=ws)).json()["orders"]}
    assert theirs["YC-001"]["vehicle"] == "V2" and theirs["YC-001"]["org"] == "wusheng"
    assert theirs["WS-010"]["org"] == "ws-police"
    # the audit row is in the importer's organisation and names where the rows went
    admin = await login(client, "admin")
    log = (await client.get("/api/audit?action=order.import", headers=admin)).json()["entries"]
    [entry] = [e for e in log if e["actor"] == "ws-op"]
    assert entry["org"] == "wusheng"
    assert entry["detail"]["orgs"] == ["ws-police", "wusheng"]
    assert [x["line"] for x in entry["detail"]["rejected"]] == [3, 4]


async def test_a_conflict_never_tells_of_another_organisations_order(
    client: httpx.AsyncClient,
) -> None:
    ws, yc = await login(client, "ws-op"), await login(client, "yc-op")
    order = {"id": "SAME-1", "type": "local", "start": T0, "end": T0 + 3_600_000}
    r = await client.post("/api/orders", headers=yc, json={**order, "vehicle": "V4"})
    assert r.status_code == 200
    # the same id in another county is free: the answer is the one for a new id
    r = await client.post("/api/orders", headers=ws, json={**order, "vehicle": "V2"})
    assert r.status_code == 200, r.text
    r2 = await client.post(
        "/api/orders", headers=ws, json={**order, "id": "NEW-1", "vehicle": "V2"}
    )
    assert r2.status_code == r.status_code
    # taken only within one's own organisation
    r = await client.post("/api/orders", headers=ws, json={**order, "vehicle": "V2"})
    assert r.status_code == 409
    # approving by id acts on one's own order only
    r = await client.post("/api/orders/SAME-1/approve", headers=ws)
    assert r.status_code == 200 and r.json()["org"] == "wusheng"
    [yc_order] = (await client.get("/api/orders", headers=yc)).json()["orders"]
    assert not yc_order["approved"]
    # the city sees both: it must say which
    admin = await login(client, "admin")
    assert (await client.post("/api/orders/SAME-1/approve", headers=admin)).status_code == 409
    r = await client.post("/api/orders/SAME-1/approve?org=yuechi", headers=admin)
    assert r.status_code == 200 and r.json()["org"] == "yuechi" and r.json()["approved"]
