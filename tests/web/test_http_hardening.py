"""HTTP edges (issue 12 items 10, 11 and the low items): body limits before
authentication, strict admin edits, security headers, 405 with Allow, 409s that
tell a stranger nothing, OpenAPI enums and lengths."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.web.conftest import PASSWORD, Built, login
from tests.web.served import running


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Built, str, httpx.AsyncClient]]:
    async with running(tmp_path) as s:
        yield s


def _port(c: httpx.AsyncClient) -> int:
    port = c.base_url.port
    assert port is not None
    return port


async def _raw(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, float]:
    """Send ``head`` and ``body`` over one TCP connection; (the answer, seconds to it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        t0 = time.perf_counter()
        writer.write(head + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 5)
        return answer, time.perf_counter() - t0
    finally:
        writer.close()


# -- body limits -------------------------------------------------------------------------------


async def test_a_200_mb_login_body_gets_413_without_being_read(
    served: tuple[Built, str, httpx.AsyncClient],
) -> None:
    _, _, c = served
    head = (
        b"POST /api/login HTTP/1.1\r\nHost: fw\r\nContent-Type: application/json\r\n"
        b"Content-Length: 209715200\r\n\r\n"
    )
    answer, took = await _raw(_port(c), head, b'{"username": "' + b"a" * 60_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer
    assert took < 2.0, f"413 took {took:.2f} s"


async def test_413_comes_before_authentication(
    served: tuple[Built, str, httpx.AsyncClient],
) -> None:
    _, _, c = served
    limit = 64 * 1024  # web.body_limits.api
    r = await c.post("/api/users", content=b"x" * (limit + 1))
    assert r.status_code == 413, r.text  # not 401: nothing was looked at
    assert r.json() == {"error": "body_too_large", "limit_bytes": limit}


async def test_a_body_without_length_is_cut_at_the_limit(
    served: tuple[Built, str, httpx.AsyncClient],
) -> None:
    """Chunked, no Content-Length: reading stops at the limit (login: 4 KiB)."""
    _, _, c = served
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 1024
            yield b" " * 1024

    r = await c.post("/api/login", content=chunks())
    assert r.status_code == 413
    assert r.json()["limit_bytes"] == 4096


async def test_uploads_have_their_own_larger_limit(
    served: tuple[Built, str, httpx.AsyncClient],
) -> None:
    _, _, c = served
    admin = await login(c, "admin")
    big_csv = "id,vehicle,type,start,end\n" + "x" * (200 * 1024)
    r = await c.post("/api/orders/import", headers=admin, content=big_csv.encode())
    assert r.status_code != 413  # 200 KiB is fine for an import (16 MiB), not for JSON
    r = await c.post("/api/tokens", headers=admin, content=b"{" + b" " * 70_000 + b"}")
    assert r.status_code == 413


# -- headers -----------------------------------------------------------------------------------


async def test_security_headers_and_no_server_banner(
    served: tuple[Built, str, httpx.AsyncClient],
) -> None:
    _, _, c = served
    for path in ("/", "/api/me", "/api/openapi.json", "/api/nothing", "/healthz"):
        r = await c.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert "uvicorn" not in r.headers.get("server", "").lower(), path
    r = await c.post("/api/login", json={"username": "viewer", "password": PASSWORD})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert (await c.get("/api/me")).headers["cache-control"] == "no-store"
    assert (await c.get("/")).headers["cache-control"] != "no-store"  # the page may revalidate


# -- methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/login", "POST"),
        ("GET", "/api/login", "POST"),
        ("PUT", "/api/users", "GET, HEAD, POST"),
        ("POST", "/api/users/someone", "DELETE, PATCH"),
        ("PATCH", "/api/fences", "GET, HEAD, POST"),
        ("DELETE", "/api/me", "GET, HEAD"),
    ],
)
async def test_unsupported_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    r = await client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert "error" in r.json()


async def test_unknown_api_path_is_404_json(client: httpx.AsyncClient) -> None:
    r = await client.delete("/api/no/such/thing")
    assert r.status_code == 404 and r.json() == {"error": "no such API route"}


# -- admin edits against the model (item 11) ---------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"org": ""}, "org"),
        ({"org": ["wusheng"]}, "org"),
        ({"org": [None]}, "org"),  # the 500 the API fuzz found before issue 12
        ({"org": "atlantis"}, "org"),
        ({"role": ""}, "role"),
        ({"role": "root"}, "role"),
        ({"disabled": "no"}, "disabled"),
        ({"disabled": 0}, "disabled"),
        ({"password": "short"}, "password"),
        ({"password": 12345678}, "password"),
        ({"nickname": "x"}, "nickname"),
    ],
)
async def test_patch_user_is_validated(
    client: httpx.AsyncClient, patch: dict[str, Any], field: str
) -> None:
    admin = await login(client, "admin")
    r = await client.patch("/api/users/ws-op", headers=admin, json=patch)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid"
    assert field in [f["field"] for f in body["fields"]], body
    assert all(f["reason"] for f in body["fields"])
    u = next(
        u
        for u in (await client.get("/api/users", headers=admin)).json()["users"]
        if u["username"] == "ws-op"
    )
    assert u == {**u, "org": "wusheng", "role": "operator", "disabled": False}
    assert (
        await client.post("/api/login", json={"username": "ws-op", "password": PASSWORD})
    ).status_code == 200


async def test_patch_cannot_push_a_user_out_of_the_admins_subtree(
    client: httpx.AsyncClient,
) -> None:
    city = await login(client, "admin")
    r = await client.post(
        "/api/users",
        headers=city,
        json={"username": "ws-admin", "password": PASSWORD, "org": "wusheng", "role": "admin"},
    )
    assert r.status_code == 200, r.text
    ws_admin = await login(client, "ws-admin")
    r = await client.patch("/api/users/ws-op", headers=ws_admin, json={"org": "yuechi"})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "org"
    r = await client.patch("/api/users/ws-op", headers=ws_admin, json={"org": "ws-police"})
    assert r.status_code == 200 and r.json()["org"] == "ws-police"
    r = await client.patch("/api/users/ws-op", headers=ws_admin, json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    r = await client.patch("/api/users/ws-op", headers=ws_admin, json={"disabled": False})
    assert r.status_code == 200 and r.json()["disabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "", "password": PASSWORD, "org": "city", "role": "viewer"}, "username"),
        ({"username": "a b", "password": PASSWORD, "org": "city", "role": "viewer"}, "username"),
        ({"username": "a/b", "password": PASSWORD, "org": "city", "role": "viewer"}, "username"),
        ({"username": "n", "password": PASSWORD, "org": "", "role": "viewer"}, "org"),
        ({"username": "n", "password": PASSWORD, "org": "nowhere", "role": "viewer"}, "org"),
        ({"username": "n", "password": PASSWORD, "org": "city", "role": ""}, "role"),
        ({"username": "n", "password": PASSWORD, "org": "city"}, "role"),
        ({"username": "n", "password": "short", "org": "city", "role": "viewer"}, "password"),
        ({"username": "n", "password": PASSWORD, "org": {"id": 1}, "role": "viewer"}, "org"),
    ],
)
async def test_create_user_is_validated(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    admin = await login(client, "admin")
    r = await client.post("/api/users", headers=admin, json=body)
    assert r.status_code == 422, r.text
    assert field in [f["field"] for f in r.json()["fields"]]


async def test_bad_json_is_422_naming_the_body(client: httpx.AsyncClient) -> None:
    admin = await login(client, "admin")
    for raw in (b"{not json", b"[1, 2]", b""):
        r = await client.post("/api/users", headers=admin, content=raw)
        assert r.status_code == 422, raw
        assert r.json()["fields"][0]["field"] == "body"


# -- 409s tell a stranger nothing -------------------------------------------------------------


async def test_user_name_conflict_is_the_same_wherever_the_name_lives(
    client: httpx.AsyncClient,
) -> None:
    city = await login(client, "admin")
    await client.post(
        "/api/users",
        headers=city,
        json={"username": "ws-admin", "password": PASSWORD, "org": "wusheng", "role": "admin"},
    )
    ws_admin = await login(client, "ws-admin")
    mine = await client.post(
        "/api/users",
        headers=ws_admin,
        json={"username": "ws-op", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
    )
    theirs = await client.post(
        "/api/users",
        headers=ws_admin,
        json={"username": "yc-op", "password": PASSWORD, "org": "wusheng", "role": "viewer"},
    )
    assert mine.status_code == theirs.status_code == 409
    assert mine.json() == theirs.json() == {"error": "user name not available"}


def _fence(fid: str, org: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"id": fid, "name": fid, "use": "forbidden", "org": org},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[106.6, 30.4], [106.7, 30.4], [106.7, 30.5], [106.6, 30.4]]],
        },
    }


async def test_fence_id_of_another_county_changes_nothing(client: httpx.AsyncClient) -> None:
    """A county admin creating fence "ktv" gets the same answer whether yuechi has a
    "ktv" or not: county-made ids live in the county's own name space."""
    city = await login(client, "admin")
    assert (
        await client.post("/api/fences", headers=city, json=_fence("ktv", "yuechi"))
    ).status_code == 200
    await client.post(
        "/api/users",
        headers=city,
        json={"username": "ws-admin", "password": PASSWORD, "org": "wusheng", "role": "admin"},
    )
    ws_admin = await login(client, "ws-admin")
    taken = await client.post("/api/fences", headers=ws_admin, json=_fence("ktv", "wusheng"))
    free = await client.post("/api/fences", headers=ws_admin, json=_fence("kfc", "wusheng"))
    assert taken.status_code == free.status_code == 200, (taken.text, free.text)
    ids = [f["properties"]["id"] for f in (taken.json()["features"] + free.json()["features"])]
    assert ids == ["wusheng.ktv", "wusheng.kfc"]
    again = await client.post("/api/fences", headers=ws_admin, json=_fence("ktv", "wusheng"))
    assert again.status_code == 409  # its own fence, which it sees anyway
    fc = (await client.get("/api/fences", headers=ws_admin)).json()
    assert sorted(f["id"] for f in fc["features"]) == ["wusheng.kfc", "wusheng.ktv"]


# -- OpenAPI -----------------------------------------------------------------------------------


async def test_openapi_states_enums_and_lengths(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/api/openapi.json")).json()

    def body_schema(path: str, method: str) -> dict[str, Any]:
        op = doc["paths"][path][method]
        schema: dict[str, Any] = op["requestBody"]["content"]["application/json"]["schema"]
        return schema

    user = body_schema("/api/users", "post")
    role = user["properties"]["role"]
    assert role.get("enum") == ["viewer", "operator", "admin"], role
    assert user["properties"]["username"]["maxLength"] == 64
    assert user["properties"]["password"]["minLength"] == 8
    assert user["additionalProperties"] is False
    patch = body_schema("/api/users/{username}", "patch")
    assert patch["properties"]["disabled"]["anyOf"][0]["type"] == "boolean"
    login_schema = body_schema("/api/login", "post")
    assert login_schema["properties"]["username"]["maxLength"] == 64
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code in ("413", "422"):
                assert code in op["responses"], (path, method, code)
            if op.get("security"):
                assert "401" in op["responses"]
