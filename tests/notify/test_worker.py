"""The worker against real local receivers: a flaky HTTP server and an SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from fleet.registry import Registry
from notify.config import NotifyConfig
from notify.outbox import PostgresOutbox, enqueue_postgres
from notify.routing import Router
from notify.worker import Notifier, ThreadedSQLiteOutbox
from tests.notify.conftest import (
    DING_SECRET,
    DSN,
    HOOK_SECRET,
    MailHandler,
    Receiver,
    event,
    sqlite_db,
    write_alarms_sqlite,
)

pytestmark = pytest.mark.slow


def settings(rec: Receiver, smtp_port: int = 25, **extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "channels": [
            {
                "type": "webhook",
                "name": "hook",
                "url": f"{rec.url}/hook",
                "secret": HOOK_SECRET.decode(),
                "timeout_s": 0.5,
            },
            {"type": "wecom", "name": "wecom", "url": f"{rec.url}/wecom?key=duty"},
            {"type": "wecom", "name": "wecom2", "url": f"{rec.url}/wecom?key=leaders"},
            {
                "type": "dingtalk",
                "name": "ding",
                "url": f"{rec.url}/dingtalk?access_token=abc",
                "secret": DING_SECRET,
            },
            {
                "type": "email",
                "name": "mail",
                "host": "127.0.0.1",
                "port": smtp_port,
                "sender": "fleetwatch@gov.example.cn",
                "to": ["duty@gov.example.cn"],
                "timeout_s": 5,
            },
        ],
        "backoff_initial_s": 0.05,
        "backoff_max_s": 0.3,
        "poll_interval_s": 0.05,
        **extra,
    }


async def wait_for(cond: Callable[[], Any], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_all_four_channels_through_failures(
    registry: Registry,
    tmp_path: Path,
    receiver: Receiver,
    smtp_server: tuple[Any, MailHandler],
) -> None:
    ctl, mail = smtp_server
    receiver.p_fail, receiver.p_stall, receiver.p_slow = 0.3, 0.15, 0.3
    receiver.stall_s = 1.0
    cfg = NotifyConfig.model_validate(
        {
            **settings(receiver, ctl.port),
            "routes": [{"name": "all", "channels": ["hook", "wecom", "ding", "mail"]}],
        }
    )
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    now_ms = int(time.time() * 1000)
    evs = [event(registry, i, started_at=now_ms + i) for i in range(5)]
    router = Router(cfg, registry, public_url="http://fw.local")
    assert write_alarms_sqlite(db, evs, router) == 20
    n = Notifier(cfg, ThreadedSQLiteOutbox(path))
    task = asyncio.create_task(n.run())

    async def done() -> bool:
        c = await n.counts()
        return c.get("sent", 0) == 20

    await wait_for(done)
    n.stop()
    await task

    # Webhook: every message accepted once (signature checked by the receiver), and the
    # failures, stalls and slow answers really happened.
    hook = receiver.unique("/hook")
    assert len(hook) == 5
    assert any(h.status == 503 for h in receiver.hits)
    assert n.stats["failed"] >= 1
    docs = [orjson.loads(h.body) for h in hook]
    assert {d["alarms"][0]["alarm_id"] for d in docs} == {e.id for e in evs}
    assert all(
        d["idempotency_key"] == h.headers["idempotency-key"]
        for d, h in zip(docs, hook, strict=True)
    )
    assert "超速" in docs[0]["text"]
    # WeCom: markdown to the robot
    wecom = receiver.unique("/wecom")
    assert len(wecom) == 5
    content = orjson.loads(wecom[0].body)["markdown"]["content"]
    assert "超速" in content and "http://fw.local/#alarm/veh00" in content
    # DingTalk: signed URL verified with the robot's secret
    ding = receiver.unique("/dingtalk")
    assert len(ding) == 5 and all(h.query["access_token"] == "abc" for h in ding)
    # E-mail: the first delivery got 451 and was retried
    assert mail.calls == 6 and len(mail.messages) == 5
    msg = email.message_from_bytes(mail.messages[0], policy=email.policy.default)
    assert "超速" in str(msg["Subject"]) and str(msg["Message-ID"]).startswith("<fw-")
    body = msg.get_body(("plain",))
    assert body is not None and "查看报警：http://fw.local/#alarm/" in body.get_content()


async def test_escalation_only_when_not_acknowledged(
    registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    cfg = NotifyConfig.model_validate(
        {
            **settings(receiver),
            "routes": [
                {
                    "name": "duty",
                    "channels": ["wecom"],
                    "escalate_to": "leaders",
                    "escalate_after_s": 600,
                },
                {"name": "leaders", "channels": ["wecom2"], "escalation_only": True},
            ],
        }
    )
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    t0 = int(time.time() * 1000)
    evs = [event(registry, 0, started_at=t0), event(registry, 1, started_at=t0)]
    write_alarms_sqlite(db, evs, Router(cfg, registry))
    clock = [t0]
    ob = ThreadedSQLiteOutbox(path)
    await ob.open()
    n = Notifier(cfg, ob, clock=lambda: clock[0])
    assert await n.run_once() == 2  # the two open messages; escalations not yet due
    assert await n.run_once() == 0
    db.execute("UPDATE alarms SET ack_user = 'li' WHERE id = ?", (evs[0].id,))
    clock[0] = t0 + 599_000
    assert await n.run_once() == 0
    clock[0] = t0 + 600_000
    assert await n.run_once() == 2
    leaders = [h for h in receiver.unique("/wecom") if h.query["key"] == "leaders"]
    assert len(leaders) == 1
    text = orjson.loads(leaders[0].body)["markdown"]["content"]
    assert "【报警升级】" in text and "川X00001" in text and "10 分钟内无人确认处理" in text
    assert await ob.counts() == {"sent": 3, "skipped": 1}
    await ob.close()
    await n.http.aclose()


async def test_storm_becomes_a_digest(
    registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    cfg = NotifyConfig.model_validate(
        {
            **settings(receiver),
            "routes": [{"name": "duty", "channels": ["wecom"], "storm_per_minute": 3}],
        }
    )
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    t0 = int(time.time() * 1000)
    evs = [event(registry, i % 12, started_at=t0 + i) for i in range(10)]
    write_alarms_sqlite(db, evs, Router(cfg, registry))
    ob = ThreadedSQLiteOutbox(path)
    await ob.open()
    clock = [t0 + 100]
    n = Notifier(cfg, ob, clock=lambda: clock[0])
    assert await n.run_once() == 10
    got = receiver.unique("/wecom")
    assert len(got) == 4  # three alone, the other seven in one digest
    digest = orjson.loads(got[-1].body)["markdown"]["content"]
    assert "【报警汇总】7 条报警消息" in digest and got[-1].headers["idempotency-key"].startswith(
        "fw-digest-"
    )
    # more during the storm minute: held back, then one more digest a minute later
    more = [event(registry, i % 12, started_at=t0 + 1000 + i) for i in range(5)]
    write_alarms_sqlite(db, more, Router(cfg, registry))
    clock[0] = t0 + 2000
    assert await n.run_once() == 5
    assert len(receiver.unique("/wecom")) == 4 and n.stats["deferred"] == 5
    clock[0] = t0 + 100 + 60_000
    assert await n.run_once() == 5
    assert len(receiver.unique("/wecom")) == 8  # three alone again, two in a digest
    assert await ob.counts() == {"sent": 15}
    await ob.close()
    await n.http.aclose()


async def test_dead_letters_listed_and_retried(
    registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.always_fail = True
    cfg = NotifyConfig.model_validate(
        {
            **settings(receiver),
            "max_attempts": 3,
            "routes": [{"name": "duty", "channels": ["hook"]}],
        }
    )
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    t0 = int(time.time() * 1000)
    evs = [event(registry, 0, started_at=t0), event(registry, 1, started_at=t0)]
    write_alarms_sqlite(db, evs, Router(cfg, registry))
    n = Notifier(cfg, ThreadedSQLiteOutbox(path))
    task = asyncio.create_task(n.run())

    async def dead() -> bool:
        return (await n.counts()).get("dead", 0) == 2

    await wait_for(dead)
    assert len([h for h in receiver.hits if h.path == "/hook"]) == 6
    listed = await n.list_dead()
    assert {d["alarm_id"] for d in listed} == {e.id for e in evs}
    assert all(d["attempts"] == 3 and "HTTP 503" in d["last_error"] for d in listed)
    receiver.always_fail = False
    assert await n.retry(listed[0]["id"]) is True
    assert await n.retry(listed[0]["id"]) is False

    async def one_sent() -> bool:
        return (await n.counts()).get("sent", 0) == 1

    await wait_for(one_sent)
    assert await n.retry_all() == 1

    async def all_sent() -> bool:
        return (await n.counts()).get("sent", 0) == 2

    await wait_for(all_sent)
    n.stop()
    await task
    assert len(receiver.unique("/hook")) == 2


async def test_wrong_secret_is_permanent(
    registry: Registry, tmp_path: Path, receiver: Receiver
) -> None:
    s = settings(receiver)
    s["channels"][0]["secret"] = "not-the-receivers"
    cfg = NotifyConfig.model_validate({**s, "routes": [{"name": "duty", "channels": ["hook"]}]})
    path = str(tmp_path / "h.db")
    db = sqlite_db(path)
    write_alarms_sqlite(
        db, [event(registry, 0, started_at=int(time.time() * 1000))], Router(cfg, registry)
    )
    ob = ThreadedSQLiteOutbox(path)
    await ob.open()
    n = Notifier(cfg, ob)
    assert await n.run_once() == 1
    dead = await n.list_dead()
    assert len(dead) == 1 and dead[0]["attempts"] == 1 and "HTTP 401" in dead[0]["last_error"]
    await ob.close()
    await n.http.aclose()


@pytest.mark.services
async def test_postgres_outbox_end_to_end(
    registry: Registry, pg_schema: str, receiver: Receiver
) -> None:
    cfg = NotifyConfig.model_validate(
        {
            **settings(receiver),
            "routes": [
                {
                    "name": "duty",
                    "channels": ["wecom"],
                    "escalate_to": "leaders",
                    "escalate_after_s": 60,
                },
                {"name": "leaders", "channels": ["ding"], "escalation_only": True},
            ],
        }
    )
    router = Router(cfg, registry)
    t0 = int(time.time() * 1000)
    evs = [event(registry, i, started_at=t0) for i in range(3)]
    ins = sql.SQL("INSERT INTO {}.alarms (id, state, ts) VALUES (%s,%s,%s)").format(
        sql.Identifier(pg_schema)
    )
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        async with conn.transaction():
            cur = conn.cursor()
            await cur.executemany(ins, [(e.id, e.state, e.ts) for e in evs])
            assert await enqueue_postgres(cur, evs, router, pg_schema) == 6
        await conn.execute(
            sql.SQL("UPDATE {}.alarms SET ack_user = 'wang' WHERE id = %s").format(
                sql.Identifier(pg_schema)
            ),
            (evs[0].id,),
        )
        await conn.commit()
    clock = [t0]
    n = Notifier(cfg, PostgresOutbox(DSN, pg_schema), clock=lambda: clock[0])
    await n.open()
    assert await n.run_once() == 3
    clock[0] = t0 + 60_000
    assert await n.run_once() == 3
    assert len(receiver.unique("/wecom")) == 3
    assert len(receiver.unique("/dingtalk")) == 2  # the acknowledged one did not escalate
    assert await n.counts() == {"sent": 5, "skipped": 1}
    await n.outbox.close()
    await n.http.aclose()
