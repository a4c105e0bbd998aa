"""死信 over HTTP, through a running app: ingest and store dead letters on SQLite and the real
PostgreSQL, scoped per organisation; a bad position through the whole service over Mosquitto;
dead notifications listed and retried until a local receiver gets them."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from fleet.batch import PositionBatch
from fleet.deadletter import DeadLetter
from fleet.registry import Registry
from geofence.index import LiveFences
from notify.config import NotifyConfig
from notify.routing import Router
from notify.worker import Notifier, ThreadedSQLiteOutbox
from store.postgres import PostgresHistory
from store.sqlite import SQLiteHistory
from stream.feed import FeedCore
from tests.conftest import free_port
from tests.fleetwatch.conftest import running_service, service_config
from tests.notify.conftest import HOOK_SECRET, Receiver, event, receiver  # noqa: F401 (a fixture)
from tests.web.conftest import T0, Clock, login, web_config
from web.app import create_app
from web.context import AppContext
from web.headers import HTTP_SERVER_OPTIONS
from web.ops_api import PAYLOAD_SHOW_BYTES, payload_view

pytestmark = pytest.mark.services

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` under uvicorn on a free port (uvicorn runs its lifespan); a client for it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **HTTP_SERVER_OPTIONS)
    )
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            yield c
    finally:
        srv.should_exit = True
        await task


def test_payload_view_text_hex_and_bounds() -> None:
    assert payload_view(b'{"lat": 30.5}') == {
        "payload_size": 13,
        "payload_truncated": False,
        "payload_text": '{"lat": 30.5}',
    }
    assert payload_view("川X 行驶\n".encode()).get("payload_text") == "川X 行驶\n"
    frame = bytes.fromhex("7e02000000013800138000007e")
    assert payload_view(frame)["payload_hex"] == frame.hex()
    assert "payload_hex" in payload_view(b"a\x00b")  # a NUL is not text to show
    big = ("汉" * PAYLOAD_SHOW_BYTES).encode()  # 3 bytes a character: the cut splits one
    v = payload_view(big)
    assert v["payload_truncated"] and v["payload_size"] == len(big)
    assert v["payload_text"] == "汉" * (PAYLOAD_SHOW_BYTES // 3)
    v = payload_view(b"\xff" * (PAYLOAD_SHOW_BYTES * 2))
    assert len(v["payload_hex"]) == 2 * PAYLOAD_SHOW_BYTES


@pytest.fixture(params=["sqlite", "postgres"])
async def stored(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AppContext]:
    if request.param == "postgres":
        request.getfixturevalue("postgres")
        store: dict[str, Any] = {
            "kind": "postgres",
            "postgres_dsn": PG_DSN,
            "postgres_schema": f"t_ops_{request.getfixturevalue('unique')}",
        }
    else:
        store = {"kind": "sqlite", "sqlite_path": str(tmp_path / "h.db")}
    cfg = web_config(tmp_path, store=store)
    reg = Registry.from_config(cfg)
    history: Any = (
        PostgresHistory(cfg.store) if request.param == "postgres" else SQLiteHistory(cfg.store)
    )
    await history.open(reg)
    yield AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        fences=LiveFences(),
        clock_ms=Clock(),
    )
    await history.close()


async def test_dead_letters_scoped_filtered_paged(stored: AppContext) -> None:
    h = stored.history
    rows = [
        # V2 (武胜县), also as a JT/T 808 header writes its phone, zero-padded to 12 digits
        DeadLetter(T0, "fleet/10002/position", "10002", "invalid_json", "line 1", b"{bad"),
        DeadLetter(T0 + 1, "jt808/000000010002/up", "000000010002", "bad_checksum", "x", b"\x7e"),
        # V4 (岳池县)
        DeadLetter(T0 + 2, "fleet/10004/position", "10004", "invalid_json", "line 1", b"[1,"),
        # no known vehicle: the root admin's only
        DeadLetter(T0 + 3, "fleet/99999/position", "99999", "unknown_terminal", "", b"{}"),
        DeadLetter(T0 + 4, "fleet/+/position", None, "bad_topic", "", b"\x00\x01"),
    ]
    rows += [
        DeadLetter(T0 + 10 + k, "fleet/10001/position", "10001", "oversized", "", b"z" * 9000)
        for k in range(7)
    ]
    await h.write_dead_letters(rows)
    if isinstance(h, PostgresHistory):  # a row dated years ahead: no partition for it
        b = PositionBatch.from_columns(
            vehicle=[1], ts=[T0 + 3 * 365 * 86_400_000], lat=[30.5], lon=[106.6]
        )
        assert await h.write_positions(b) == 0
    app = create_app(stored)
    async with serving(app) as c:
        admin_h, ws_h, yc_h = [await login(c, u) for u in ("admin", "ws-op", "yc-op")]

        r = await c.get("/api/dead-letters", params={"page_size": 5}, headers=admin_h)
        assert r.status_code == 200, r.text
        body = r.json()
        n_all = len(rows) + (1 if isinstance(h, PostgresHistory) else 0)
        assert body["total"] == n_all and len(body["items"]) == 5
        assert set(body["items"][0]) >= {"id", "at", "source", "reason", "topic", "terminal"}
        page2 = (
            await c.get("/api/dead-letters", params={"page_size": 5, "page": 2}, headers=admin_h)
        ).json()["items"]
        assert not {x["id"] for x in body["items"]} & {x["id"] for x in page2}

        ws_items = (
            await c.get("/api/dead-letters", params={"source": "ingest"}, headers=ws_h)
        ).json()
        assert ws_items["total"] == 2
        assert {x["terminal"] for x in ws_items["items"]} == {"10002", "000000010002"}
        yc_items = (await c.get("/api/dead-letters", headers=yc_h)).json()["items"]
        assert [x["payload_text"] for x in yc_items] == ["[1,"]

        hexed = (
            await c.get("/api/dead-letters", params={"reason": "bad_topic"}, headers=admin_h)
        ).json()["items"]
        assert hexed[0]["payload_hex"] == "0001" and hexed[0]["terminal"] is None
        big = (
            await c.get("/api/dead-letters", params={"reason": "oversized"}, headers=admin_h)
        ).json()
        assert big["total"] == 7
        assert all(
            len(x["payload_text"]) == PAYLOAD_SHOW_BYTES and x["payload_truncated"]
            for x in big["items"]
        )
        window = (
            await c.get(
                "/api/dead-letters",
                params={"from": T0 + 1, "to": T0 + 3, "source": "ingest"},
                headers=admin_h,
            )
        ).json()
        assert [x["reason"] for x in window["items"]] == ["invalid_json", "bad_checksum"]
        if isinstance(h, PostgresHistory):
            st = (
                await c.get("/api/dead-letters", params={"source": "store"}, headers=admin_h)
            ).json()["items"]
            assert [(x["source"], x["reason"], x["terminal"]) for x in st] == [
                ("store", "outside_partition_window", "10002")
            ]
            # V2's refused row is 武胜县's too
            ws_total = (await c.get("/api/dead-letters", headers=ws_h)).json()["total"]
            assert ws_total == 3

        assert (
            await c.get("/api/dead-letters", headers=await login(c, "viewer"))
        ).status_code == 403
        bad = await c.get("/api/dead-letters", params={"source": "mqtt"}, headers=admin_h)
        assert bad.status_code == 400
        # notifications off: nothing died, nothing to retry
        assert (await c.get("/api/notify/dead", headers=admin_h)).json() == {"items": []}
        assert (await c.post("/api/notify/dead/1/retry", headers=admin_h)).status_code == 404


async def test_bad_json_through_the_whole_service(
    mosquitto: tuple[str, int], tmp_path: Path, unique: str
) -> None:
    prefix, token, port = f"ops{unique}", "ops-token-" + unique, free_port()
    cfg = service_config(
        tmp_path, prefix, port, vehicles=[("V1", "13800000001", "川X00001")], token=token
    )
    sent = b'{"ts": 1763949600000, "lat": 30.5, "lon": '
    async with running_service(cfg):
        async with aiomqtt.Client("127.0.0.1", mosquitto[1]) as pub:
            await pub.publish(f"{prefix}/fleet/13800000001/position", sent, qos=1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            end = time.monotonic() + 15
            items: list[dict[str, Any]] = []
            while not items and time.monotonic() < end:
                r = await c.get(
                    "/api/dead-letters",
                    params={"reason": "invalid_json"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 200, r.text
                items = r.json()["items"]
                await asyncio.sleep(0.1)
    assert len(items) == 1, "the bad position never reached /api/dead-letters"
    got = items[0]
    assert got["payload_text"] == sent.decode() and got["source"] == "ingest"
    assert got["terminal"] == "13800000001"
    assert got["topic"] == f"{prefix}/fleet/13800000001/position"


async def test_dead_notifications_listed_scoped_and_retried(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    receiver.always_fail = True
    ncfg = NotifyConfig.model_validate(
        {
            "enabled": True,
            "channels": [
                {
                    "type": "webhook",
                    "name": "hook",
                    "url": f"{receiver.url}/hook",
                    "secret": HOOK_SECRET.decode(),
                }
            ],
            "routes": [{"name": "duty", "channels": ["hook"]}],
            "max_attempts": 1,
            "poll_interval_s": 0.05,
        }
    )
    cfg = web_config(tmp_path)
    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    history.notify_router = Router(ncfg, reg)
    notifier = Notifier(ncfg, ThreadedSQLiteOutbox(cfg.store.sqlite_path))
    now = int(time.time() * 1000)
    evs = [event(reg, v, started_at=now) for v in (1, 3)]  # V2 武胜县, V4 岳池县
    await history.write_alarm_events(evs)
    run = asyncio.create_task(notifier.run())
    ctx = AppContext(
        config=cfg,
        registry=reg,
        feed=FeedCore(reg, interval_ms=100),
        history=history,
        fences=LiveFences(),
        notifier=notifier,
    )
    app = create_app(ctx)
    try:
        end = time.monotonic() + 15
        while (await notifier.counts()).get("dead", 0) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.05)
        async with serving(app) as c:
            ws_h, yc_h, admin_h = (
                await login(c, "ws-op"),
                await login(c, "yc-op"),
                await login(c, "admin"),
            )
            assert len((await c.get("/api/notify/dead", headers=admin_h)).json()["items"]) == 2
            mine = (await c.get("/api/notify/dead", headers=ws_h)).json()["items"]
            assert [x["alarm_id"] for x in mine] == [evs[0].id]
            d = mine[0]
            assert set(d) == {"id", "route", "channel", "alarm_id", "error", "attempts", "at"}
            assert d["route"] == "duty" and d["channel"] == "hook" and d["attempts"] == 1
            assert "503" in d["error"]
            # 岳池县 cannot retry 武胜县's
            r = await c.post(f"/api/notify/dead/{d['id']}/retry", headers=yc_h)
            assert r.status_code == 404
            receiver.always_fail = False
            r = await c.post(f"/api/notify/dead/{d['id']}/retry", headers=ws_h)
            assert r.status_code == 200 and r.json() == {"ok": True}
            while not receiver.unique("/hook") and time.monotonic() < end:
                await asyncio.sleep(0.05)
            assert len(receiver.unique("/hook")) == 1
            assert evs[0].id.encode() in receiver.unique("/hook")[0].body
            left = (await c.get("/api/notify/dead", headers=admin_h)).json()["items"]
            assert [x["alarm_id"] for x in left] == [evs[1].id]
            assert (
                await c.post(f"/api/notify/dead/{d['id']}/retry", headers=ws_h)
            ).status_code == 404
            audit = (await c.get("/api/audit", headers=admin_h)).json()["entries"]
            assert any(e["action"] == "notify.retry" and e["target"] == str(d["id"]) for e in audit)
    finally:
        notifier.stop()
        await run
        await history.close()
