"""Sessions (issue 14, CONTRACTS.md "Session") and revocation of open feeds (issue 12 item 8).

The HTTP part runs the app in-process; the feed part runs it under uvicorn on a free
port with a real websockets client. The app's clock is the test's: expiry is moved
by moving it, while the feed's re-check runs on real time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.web.conftest import PASSWORD, Built, build, login
from tests.web.served import running

RECHECK_S = 0.3


async def _token(c: httpx.AsyncClient, user: str, **extra: Any) -> dict[str, Any]:
    r = await c.post("/api/login", json={"username": user, "password": PASSWORD, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _closed_within(ws: ClientConnection, seconds: float) -> tuple[int, str, float]:
    """Read until the server closes; (code, reason, seconds it took)."""
    t0 = time.perf_counter()
    with pytest.raises(ConnectionClosed) as exc:
        while True:
            await asyncio.wait_for(ws.recv(), seconds - (time.perf_counter() - t0))
    rcvd = exc.value.rcvd
    assert rcvd is not None, "the server did not send a close frame"
    return rcvd.code, rcvd.reason, time.perf_counter() - t0


# -- sliding expiry and caps -------------------------------------------------------------------


async def test_use_keeps_a_session_alive_up_to_its_cap(
    client: httpx.AsyncClient, built: Built
) -> None:
    auth = built.ctx.config.web.auth
    t0 = built.clock.now
    body = await _token(client, "viewer")
    assert body["expires_at"] == t0 + auth.idle_timeout_s * 1000
    assert body["absolute_expires_at"] == t0 + auth.max_session_s * 1000
    h = _bearer(body["token"])
    step = auth.idle_timeout_s * 1000 * 3 // 4
    last = body["expires_at"]
    # used every 3/4 idle period: alive far past one idle period
    while built.clock.now + step < body["absolute_expires_at"]:
        built.clock.now += step
        r = await client.get("/api/me", headers=h)
        assert r.status_code == 200, (built.clock.now - t0, r.text)
        session = r.json()["session"]
        assert session["expires_at"] > last
        assert session["expires_at"] <= session["absolute_expires_at"]
        last = session["expires_at"]
    assert built.clock.now - t0 > 10 * auth.idle_timeout_s * 1000
    # ... but never past the absolute cap, however busy
    built.clock.now = body["absolute_expires_at"]
    r = await client.get("/api/me", headers=h)
    assert r.status_code == 401 and r.json() == {"error": "session_expired"}


async def test_machine_tokens_do_not_slide(client: httpx.AsyncClient, built: Built) -> None:
    admin = await login(client, "admin")
    r = await client.post("/api/tokens", headers=admin, json={"name": "gw", "ttl_s": 3600})
    tok = r.json()
    assert tok["expires_at"] == built.clock.now + 3_600_000
    assert (await client.get("/api/me", headers=_bearer(tok["token"]))).json()["session"] is None
    built.clock.now += 3_600_000
    r = await client.get("/api/vehicles", headers=_bearer(tok["token"]))
    assert r.status_code == 401 and r.json() == {"error": "session_expired"}


async def test_room_session_with_duty_operator(client: httpx.AsyncClient, built: Built) -> None:
    auth = built.ctx.config.web.auth
    t0 = built.clock.now
    body = await _token(client, "ws-op", room=True, duty_operator="张伟")
    assert body["absolute_expires_at"] == t0 + auth.room_max_session_s * 1000
    h = _bearer(body["token"])
    s = (await client.get("/api/me", headers=h)).json()["session"]
    assert s["room"] is True and s["duty_operator"] == "张伟"
    r = await client.put("/api/session/duty", headers=h, json={"duty_operator": "李娜"})
    assert r.status_code == 200 and r.json()["session"]["duty_operator"] == "李娜"
    assert (await client.get("/api/me", headers=h)).json()["session"]["duty_operator"] == "李娜"
    audit = (await client.get("/api/audit", headers=await login(client, "admin"))).json()
    duty = [e for e in audit["entries"] if e["action"] == "session.duty"]
    assert duty and duty[0]["detail"] == {"before": "张伟", "after": "李娜"}
    assert duty[0]["actor"] == "ws-op"
    # a room session outlives the ordinary cap when used
    step = auth.idle_timeout_s * 1000 // 2
    while built.clock.now < t0 + auth.max_session_s * 1000 + step:
        built.clock.now += step
        assert (await client.get("/api/me", headers=h)).status_code == 200
    # an ordinary session has no duty operator to change
    plain = await login(client, "viewer")
    r = await client.put("/api/session/duty", headers=plain, json={"duty_operator": "王芳"})
    assert r.status_code == 409
    s = (await client.get("/api/me", headers=plain)).json()["session"]
    assert s["room"] is False and s["duty_operator"] is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"room": True}, "body"),
        ({"duty_operator": "张伟"}, "body"),
        ({"room": "yes", "duty_operator": "张伟"}, "room"),
        ({"room": True, "duty_operator": "   "}, "duty_operator"),
    ],
)
async def test_room_login_is_validated(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str
) -> None:
    r = await client.post("/api/login", json={"username": "viewer", "password": PASSWORD, **extra})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid"
    assert field in {f["field"] for f in r.json()["fields"]}


async def test_ended_sessions_say_why(client: httpx.AsyncClient, built: Built) -> None:
    admin = await login(client, "admin")
    r = await client.get("/api/me", headers=_bearer("fw_never_issued"))
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    assert r.headers["WWW-Authenticate"] == "Bearer"
    for end in ("disable", "delete", "revoke", "role"):
        await client.post(
            "/api/users",
            headers=admin,
            json={"username": "temp", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
        )
        tok = (await _token(client, "temp"))["token"]
        if end == "disable":
            await client.patch("/api/users/temp", headers=admin, json={"disabled": True})
        elif end == "role":
            await client.patch("/api/users/temp", headers=admin, json={"role": "operator"})
        elif end == "revoke":
            tid = next(
                t["id"]
                for t in (await client.get("/api/tokens", headers=admin)).json()["tokens"]
                if t["username"] == "temp"
            )
            assert (await client.delete(f"/api/tokens/{tid}", headers=admin)).status_code == 200
        r = await client.get("/api/me", headers=_bearer(tok))
        if end != "delete":
            assert r.status_code == 401 and r.json() == {"error": "session_revoked"}, end
        await client.delete("/api/users/temp", headers=admin)
        r = await client.get("/api/me", headers=_bearer(tok))
        assert r.status_code == 401 and r.json() == {"error": "session_revoked"}, end


async def test_old_token_table_is_migrated(tmp_path: Path) -> None:
    """A database from before sessions gains the new columns; its tokens keep working."""
    import sqlite3

    db = sqlite3.connect(tmp_path / "history.db")
    db.execute(
        "CREATE TABLE web_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,"
        " username TEXT, name TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)"
    )
    from web.auth import hash_token

    b = await build(tmp_path)
    db.execute(
        "INSERT INTO web_tokens VALUES (?, ?, NULL, 'old', 'city', 'viewer', 0, ?)",
        ("oldid", hash_token("fw_old_machine_token"), b.clock.now + 60_000),
    )
    db.commit()
    db.close()
    async with b.app.router.lifespan_context(b.app):
        transport = httpx.ASGITransport(app=b.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fw") as c:
            r = await c.get("/api/vehicles", headers=_bearer("fw_old_machine_token"))
            assert r.status_code == 200, r.text
    await b.ctx.history.close()


# -- open feeds close when their session ends ------------------------------------------------


async def _feed(url: str, token: str) -> ClientConnection:
    ws = await connect(url)
    await ws.send(json.dumps({"op": "auth", "token": token}))
    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert first["type"] == "snapshot", first
    return ws


Ender = Callable[[Built, httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


async def _logout(b: Built, c: httpx.AsyncClient, s: dict[str, Any]) -> None:
    assert (await c.post("/api/logout", headers=_bearer(s["token"]))).status_code == 200


async def _revoke(b: Built, c: httpx.AsyncClient, s: dict[str, Any]) -> None:
    admin = _bearer((await _token(c, "admin"))["token"])
    toks = (await c.get("/api/tokens", headers=admin)).json()["tokens"]
    tid = next(t["id"] for t in toks if t["username"] == "temp")
    assert (await c.delete(f"/api/tokens/{tid}", headers=admin)).status_code == 200


async def _delete(b: Built, c: httpx.AsyncClient, s: dict[str, Any]) -> None:
    admin = _bearer((await _token(c, "admin"))["token"])
    assert (await c.delete("/api/users/temp", headers=admin)).status_code == 200


async def _disable(b: Built, c: httpx.AsyncClient, s: dict[str, Any]) -> None:
    admin = _bearer((await _token(c, "admin"))["token"])
    r = await c.patch("/api/users/temp", headers=admin, json={"disabled": True})
    assert r.status_code == 200


async def _expire(b: Built, c: httpx.AsyncClient, s: dict[str, Any]) -> None:
    b.clock.now = s["absolute_expires_at"]


@pytest.mark.parametrize(
    ("ender", "reason"),
    [
        (_logout, "session_revoked"),
        (_revoke, "session_revoked"),
        (_delete, "session_revoked"),
        (_disable, "session_revoked"),
        (_expire, "session_expired"),
    ],
    ids=["logout", "revoke", "delete", "disable", "expire"],
)
async def test_open_feed_closes_within_5s_when_its_session_ends(
    tmp_path: Path, ender: Ender, reason: str
) -> None:
    async with running(tmp_path, auth={"feed_recheck_s": 2.0}) as (b, url, c):
        admin = _bearer((await _token(c, "admin"))["token"])
        r = await c.post(
            "/api/users",
            headers=admin,
            json={"username": "temp", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
        )
        assert r.status_code == 200, r.text
        s = await _token(c, "temp")
        ws = await _feed(url, s["token"])
        await ender(b, c, s)
        code, why, took = await _closed_within(ws, 5.0)
        assert (code, why) == (4401, reason)
        assert took < 5.0
        # and it cannot come back with that token
        ws2 = await connect(url)
        await ws2.send(json.dumps({"op": "auth", "token": s["token"]}))
        assert json.loads(await asyncio.wait_for(ws2.recv(), 5))["reason"] == reason
        code, why, _ = await _closed_within(ws2, 5.0)
        assert (code, why) == (4401, reason)


async def test_an_open_feed_keeps_its_session_alive(tmp_path: Path) -> None:
    async with running(tmp_path, auth={"feed_recheck_s": RECHECK_S}) as (b, url, c):
        s = await _token(c, "viewer")
        idle_ms = b.ctx.config.web.auth.idle_timeout_s * 1000
        ws = await _feed(url, s["token"])
        t0 = b.clock.now
        # three idle periods pass with no API call; the feed's re-checks keep it alive
        while b.clock.now - t0 < 3 * idle_ms:
            b.clock.now += idle_ms // 3
            await asyncio.sleep(RECHECK_S * 2.5)
        r = await c.get("/api/me", headers=_bearer(s["token"]))
        assert r.status_code == 200, r.text
        await ws.send(json.dumps({"op": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] in ("pong", "positions")
        await ws.close()


# -- the same on PostgreSQL ----------------------------------------------------------------------


@pytest.fixture
async def pg_schema(unique: str) -> AsyncIterator[str]:
    """A schema of its own in the real PostgreSQL, dropped afterwards."""
    import psycopg

    from tests.conftest import require_service

    require_service("postgres")
    schema = f"fw_sessions_{unique}"
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{dsn}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.services
async def test_sessions_on_postgresql(tmp_path: Path, pg_schema: str) -> None:
    """Migration of an older token table, sliding expiry, duty operator and revocation
    against the real PostgreSQL."""
    import psycopg

    from tests.web.conftest import Clock, web_config
    from web.accounts import Accounts
    from web.auth import Principal, Refused, hash_token

    with psycopg.connect(pg_schema, autocommit=True) as c:
        c.execute(
            "CREATE TABLE web_tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,"
            " username TEXT, name TEXT NOT NULL, org TEXT NOT NULL, role TEXT NOT NULL,"
            " created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL)"
        )
        c.execute(
            "INSERT INTO web_tokens VALUES ('old', %s, NULL, 'old', 'city', 'viewer', 0, %s)",
            (hash_token("fw_old"), 2**60),
        )
    schema = pg_schema.rsplit("%3D", 1)[1]
    store = {"kind": "postgres", "postgres_dsn": pg_schema, "postgres_schema": schema}
    cfg = web_config(tmp_path, store=store)
    clock = Clock()
    accounts = Accounts(cfg, clock)
    await accounts.open()
    try:
        assert isinstance(await accounts.authenticate("fw_old"), Principal)
        p = await accounts.check_password("ws-op", PASSWORD)
        assert p is not None
        token, rec = await accounts.open_session(p, room=True, duty_operator="张伟")
        idle = cfg.web.auth.idle_timeout_s * 1000
        clock.now += idle - 1000
        found = await accounts.authenticate(token)
        assert isinstance(found, Principal) and found.session is not None
        assert found.session.room and found.session.duty_operator == "张伟"
        assert found.session.expires_at == clock.now + idle
        assert await accounts.set_duty_operator(rec["id"], "李娜")
        clock.now += idle - 1000  # past the first expiry: alive because it was used
        found = await accounts.authenticate(token)
        assert isinstance(found, Principal) and found.session is not None
        assert found.session.duty_operator == "李娜"
        await accounts.revoke_token(rec["id"], "logout")
        assert await accounts.authenticate(token) == Refused("session_revoked")
        t2, _ = await accounts.open_session(p)
        clock.now += idle
        assert await accounts.authenticate(t2) == Refused("session_expired")
    finally:
        await accounts.close()
