"""Fixtures of the notify tests: a registry, alarm events, and real local receivers.

The HTTP receiver is a Starlette app under uvicorn on a free port of 127.0.0.1.
It plays the far end of all three HTTP channels and misbehaves on purpose:
``/hook`` fails, stalls and answers slowly at random (seeded); ``/wecom`` and
``/dingtalk`` answer like the robots (``errcode``), and ``/dingtalk`` checks the
signed URL. Every request is recorded; a request is *accepted* when it got a
success answer, and the receiver drops an accepted key it has seen before —
what a receiver honouring the idempotency key does.

The SMTP receiver is aiosmtpd's threaded controller.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from psycopg import sql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.events import AlarmEvent, episode_id
from fleet.model import OrgConfig, VehicleConfig
from fleet.registry import OrgTree, Registry
from notify.channels import verify_dingtalk, verify_webhook
from notify.outbox import outbox_ddl_postgres

DSN = "postgresql://postgres@127.0.0.1:5432/test"
HOOK_SECRET = b"receiver-shared-secret"
DING_SECRET = "SECtest0123456789abcdef"

ORGS = [
    OrgConfig(id="city", name="广安市机关事务管理局"),
    OrgConfig(id="qx", name="前锋区", parent="city"),
    OrgConfig(id="qx_jj", name="前锋区纪委", parent="qx"),
    OrgConfig(id="ws", name="武胜县", parent="city"),
]

# 2025-11-25 09:30:00 +08:00 (a Tuesday)
T0 = 1764034200000


def make_registry(n: int = 12) -> Registry:
    vehicles = [
        VehicleConfig(
            id=f"veh{i:03d}",
            plate=f"川X{i:05d}",
            terminal=f"13900{i:06d}",
            org=("qx", "ws", "qx_jj", "city")[i % 4],
        )
        for i in range(n)
    ]
    return Registry(vehicles, OrgTree.from_config(ORGS))


@pytest.fixture
def registry() -> Registry:
    return make_registry()


def event(
    registry: Registry,
    vehicle: int,
    kind: str = "speeding",
    action: str = "open",
    *,
    started_at: int = T0,
    ts: int | None = None,
    severity: str = "warning",
    backfill: bool = False,
    detail: dict[str, Any] | None = None,
) -> AlarmEvent:
    vid = registry.ids[vehicle]
    return AlarmEvent(
        id=episode_id(vid, kind, started_at, backfill=backfill),
        vehicle=vehicle,
        vehicle_id=vid,
        kind=kind,
        action=action,  # type: ignore[arg-type]
        started_at=started_at,
        ts=ts if ts is not None else started_at,
        lat=30.456,
        lon=106.633,
        ended_at=(ts or started_at) if action == "close" else None,
        severity=severity,  # type: ignore[arg-type]
        backfill=backfill,
        detail=detail if detail is not None else {"limit_kmh": 80.0, "peak_kmh": 97.5},
    )


# A minimal alarms table with the columns the notifier reads (the store's has more).
ALARMS_DDL_SQLITE = (
    "CREATE TABLE IF NOT EXISTS alarms (id TEXT PRIMARY KEY, state TEXT NOT NULL,"
    " ts INTEGER NOT NULL, ack_user TEXT)"
)


def sqlite_db(path: str) -> sqlite3.Connection:
    from notify.outbox import OUTBOX_DDL_SQLITE

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(OUTBOX_DDL_SQLITE)
    db.execute(ALARMS_DDL_SQLITE)
    return db


def write_alarms_sqlite(db: sqlite3.Connection, events: list[AlarmEvent], router: Any) -> int:
    """What the store does: upsert the alarm rows and queue the messages, in one transaction."""
    from notify.outbox import enqueue_sqlite

    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT INTO alarms (id, state, ts) VALUES (?,?,?)"
            " ON CONFLICT (id) DO UPDATE SET state = excluded.state, ts = excluded.ts",
            [(e.id, e.state, e.ts) for e in events],
        )
        n = enqueue_sqlite(db, events, router)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return n


@pytest.fixture
def pg_schema(postgres: tuple[str, int], unique: str) -> Iterator[str]:
    schema = f"t_notify_{unique}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(outbox_ddl_postgres(schema))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.alarms (id text PRIMARY KEY, state text NOT NULL,"
                " ts int8 NOT NULL, ack_user text)"
            ).format(sql.Identifier(schema))
        )
    yield schema
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- HTTP receiver ---------------------------------------------------------------------------
@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes
    status: int
    duplicate: bool = False


@dataclass
class Receiver:
    """Behaviour knobs (change them between steps) and what arrived."""

    url: str = ""
    p_fail: float = 0.0
    p_stall: float = 0.0
    p_slow: float = 0.0
    stall_s: float = 3.0
    slow_s: tuple[float, float] = (0.05, 0.3)
    always_fail: bool = False
    seed: int = 7
    hits: list[Hit] = field(default_factory=list)
    seen_keys: set[str] = field(default_factory=set)
    stalled: int = 0
    inflight: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def accepted(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path and 200 <= h.status < 300]

    def unique(self, path: str) -> list[Hit]:
        return [h for h in self.accepted(path) if not h.duplicate]

    def _accept(self, hit: Hit) -> None:
        key = hit.headers.get("idempotency-key", "")
        hit.duplicate = key in self.seen_keys
        self.seen_keys.add(key)

    async def hook(self, request: Request) -> Response:
        self.inflight += 1
        try:
            return await self._hook(request)
        finally:
            self.inflight -= 1

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        r = self.rng.random()
        status = 200
        if self.always_fail or r < self.p_fail:
            status = 503
        elif r < self.p_fail + self.p_stall:
            self.stalled += 1
            await asyncio.sleep(self.stall_s)  # the client times out first
        elif r < self.p_fail + self.p_stall + self.p_slow:
            await asyncio.sleep(self.rng.uniform(*self.slow_s))
        h = dict(request.headers)
        ok = verify_webhook(
            HOOK_SECRET,
            h.get("x-fleetwatch-timestamp", ""),
            body,
            h.get("x-fleetwatch-signature", ""),
            now_s=time.time(),
        )
        if not ok:
            status = 401
        hit = Hit("/hook", h, dict(request.query_params), body, status)
        if status == 200:
            self._accept(hit)
        self.hits.append(hit)
        return Response(status_code=status)

    async def wecom(self, request: Request) -> Response:
        body = await request.body()
        hit = Hit("/wecom", dict(request.headers), dict(request.query_params), body, 200)
        self._accept(hit)
        self.hits.append(hit)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})

    async def dingtalk(self, request: Request) -> Response:
        body = await request.body()
        q = dict(request.query_params)  # decoded: sign is plain base64 here
        ok = verify_dingtalk(
            DING_SECRET,
            int(q.get("timestamp", "0")),
            q.get("sign", ""),
            now_ms=int(time.time() * 1000),
        )
        hit = Hit("/dingtalk", dict(request.headers), q, body, 200)
        self.hits.append(hit)
        if not ok:
            return JSONResponse({"errcode": 310000, "errmsg": "sign not match"})
        self._accept(hit)
        return JSONResponse({"errcode": 0, "errmsg": "ok"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(
        routes=[
            Route("/hook", rec.hook, methods=["POST"]),
            Route("/wecom", rec.wecom, methods=["POST"]),
            Route("/dingtalk", rec.dingtalk, methods=["POST"]),
        ]
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    # Let stalled handlers finish (their clients gave up long ago) before shutting down,
    # so no connection is torn down under a running handler.
    rec.p_stall = 0.0
    await asyncio.sleep(rec.stall_s + 0.2 if rec.stalled else 0.0)
    server.should_exit = True
    await task
    sock.close()


# -- SMTP receiver ---------------------------------------------------------------------------
class MailHandler:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls = 0
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.calls += 1
        if self.calls <= self.fail_first:
            return "451 4.3.0 temporary failure, try again"
        self.messages.append(envelope.original_content or envelope.content)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, MailHandler]]:
    handler = MailHandler(fail_first=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    yield ctl, handler
    ctl.stop()
