"""The delivery worker: claims due outbox rows, sends them, records the outcome.

::

    notifier = build_notifier(cfg.notify, cfg.store)
    task = asyncio.create_task(notifier.run())   # until notifier.stop() or cancel
    ...
    notifier.wake()                     # optional: rows were just queued, look now
    await notifier.list_dead()          # for the web API
    await notifier.retry(row_id)

Each cycle: claim up to ``claim_batch`` due rows with a lease of ``lease_s``;
skip escalations whose alarm was acknowledged meanwhile (read from the store's
``alarms`` table, or an ``is_acknowledged`` callable); fold storms into digests
(:class:`~notify.routing.StormGate`); deliver at most ``concurrency`` at once;
mark each row sent, or failed with exponential back-off and jitter, or dead
after ``max_attempts`` tries. A process killed mid-delivery leaves its rows
leased; they are claimed again once the lease expires and sent with the same
idempotency key, so a receiver that honours the key sees each message once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol, TypeVar

from fleet import aio
from fleet.errors import Misuse, ServiceUnavailable
from fleet.threads import to_thread_holding
from notify.channels import (
    DeliveryFailed,
    dingtalk_request,
    email_message,
    webhook_body,
    webhook_request,
    wecom_request,
)
from notify.config import (
    DingTalkChannel,
    EmailChannel,
    NotifyConfig,
    SmsChannel,
    WebhookChannel,
    WeComChannel,
)
from notify.http import HttpTransport
from notify.message import (
    digest_markdown,
    digest_subject,
    digest_text,
    notice_markdown,
    notice_subject,
    notice_text,
)
from notify.outbox import OutboxRow, PostgresOutbox, SQLiteOutbox
from notify.routing import (
    OutboxEntry,
    StormGate,
    backoff_ms,
    delivery_key,
    digest_key,
    split_by_target,
)
from notify.sms import sms_request
from notify.smtp import send_email

__all__ = ["HistoryDatabase", "Notifier", "Outbox", "ThreadedSQLiteOutbox", "build_notifier"]


class HistoryDatabase(Protocol):
    """Where the history store keeps its alarms, so the outbox beside them
    (``store.config.StoreConfig`` has this shape; notify does not import the store)."""

    @property
    def kind(self) -> str: ...
    @property
    def sqlite_path(self) -> str: ...
    @property
    def postgres_dsn(self) -> str: ...
    @property
    def postgres_schema(self) -> str: ...
    @property
    def connect_timeout_s(self) -> int: ...


log = logging.getLogger(__name__)
T = TypeVar("T")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


class Outbox(Protocol):
    """What the worker needs of an outbox (``PostgresOutbox``, ``ThreadedSQLiteOutbox``)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def claim(self, now: int, lease_ms: int, limit: int, owner: str) -> list[OutboxRow]: ...
    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int: ...
    async def mark_sent(self, ids: Sequence[int], now: int) -> int: ...
    async def mark_failed(
        self,
        ids: Sequence[int],
        owner: str,
        now: int,
        next_due: int,
        error: str,
        max_attempts: int,
        permanent: bool = False,
    ) -> int: ...
    async def mark_skipped(self, ids: Sequence[int], now: int, reason: str) -> int: ...
    async def defer(self, ids: Sequence[int], owner: str, now: int, due: int) -> int: ...
    async def set_digest(self, ids: Sequence[int], owner: str, tag: str) -> int: ...
    async def acknowledged(self, alarm_ids: Sequence[str]) -> set[str]: ...
    async def list_dead(self, limit: int = 100) -> list[dict[str, Any]]: ...
    async def retry(self, row_id: int | None, now: int) -> int: ...
    async def purge(self, before: int) -> int: ...
    async def counts(self) -> dict[str, int]: ...


class ThreadedSQLiteOutbox:
    """:class:`SQLiteOutbox` run in a worker thread, one call at a time."""

    def __init__(self, path: str) -> None:
        self.sync = SQLiteOutbox(path)
        self._lock = asyncio.Lock()

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await to_thread_holding(self._lock, fn, *args)

    async def open(self) -> None:
        await self._call(self.sync.open)

    async def close(self) -> None:
        await self._call(self.sync.close)

    async def claim(self, now: int, lease_ms: int, limit: int, owner: str) -> list[OutboxRow]:
        out: list[OutboxRow] = await self._call(self.sync.claim, now, lease_ms, limit, owner)
        return out

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        return int(await self._call(self.sync.enqueue, entries))

    async def mark_sent(self, ids: Sequence[int], now: int) -> int:
        return int(await self._call(self.sync.mark_sent, ids, now))

    async def mark_failed(
        self,
        ids: Sequence[int],
        owner: str,
        now: int,
        next_due: int,
        error: str,
        max_attempts: int,
        permanent: bool = False,
    ) -> int:
        return int(
            await self._call(
                self.sync.mark_failed, ids, owner, now, next_due, error, max_attempts, permanent
            )
        )

    async def mark_skipped(self, ids: Sequence[int], now: int, reason: str) -> int:
        return int(await self._call(self.sync.mark_skipped, ids, now, reason))

    async def defer(self, ids: Sequence[int], owner: str, now: int, due: int) -> int:
        return int(await self._call(self.sync.defer, ids, owner, now, due))

    async def set_digest(self, ids: Sequence[int], owner: str, tag: str) -> int:
        return int(await self._call(self.sync.set_digest, ids, owner, tag))

    async def acknowledged(self, alarm_ids: Sequence[str]) -> set[str]:
        out: set[str] = await self._call(self.sync.acknowledged, alarm_ids)
        return out

    async def list_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = await self._call(self.sync.list_dead, limit)
        return out

    async def retry(self, row_id: int | None, now: int) -> int:
        return int(await self._call(self.sync.retry, row_id, now))

    async def purge(self, before: int) -> int:
        return int(await self._call(self.sync.purge, before))

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = await self._call(self.sync.counts)
        return out


@dataclass(frozen=True, slots=True)
class _Delivery:
    rows: tuple[OutboxRow, ...]
    key: str  # the idempotency key the receiver sees
    digest: bool


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Notifier:
    """Delivers the outbox. One per process is enough; several may share a PostgreSQL outbox."""

    def __init__(
        self,
        config: NotifyConfig,
        outbox: Outbox,
        *,
        http: HttpTransport | None = None,
        mailer: Callable[[EmailChannel, EmailMessage], Awaitable[None]] = send_email,
        is_acknowledged: Callable[[str], bool] | None = None,
        clock: Callable[[], int] = _wall_ms,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self._own_http = http is None
        self.http = http or HttpTransport()
        self.mailer = mailer
        self.is_acknowledged = is_acknowledged
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats: Counter[str] = Counter()
        self._gates: dict[tuple[str, str], StormGate] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_purge = 0
        self._opened = False
        # One database connection: calls take turns (a transaction spans several awaits).
        self._lock = asyncio.Lock()

    async def _db(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        async with self._lock:
            return await fn(*args)

    async def open(self) -> None:
        """Open the outbox (create its table if missing). :meth:`run` calls it too."""
        if not self._opened:
            await self.outbox.open()
            self._opened = True

    # -- operators (web API) -------------------------------------------------------------------
    async def list_dead(self, limit: int = 100) -> list[dict[str, Any]]:
        """Messages that gave up: id, key, alarm_id, purpose, route, channel, attempts, error."""
        await self.open()
        return await self._db(self.outbox.list_dead, limit)

    async def retry(self, row_id: int) -> bool:
        """Queue a dead message again (tries reset). False if no dead message has that id."""
        await self.open()
        n = await self._db(self.outbox.retry, row_id, self.clock())
        self.wake()
        return n > 0

    async def retry_all(self) -> int:
        await self.open()
        n = await self._db(self.outbox.retry, None, self.clock())
        self.wake()
        return n

    async def counts(self) -> dict[str, int]:
        """Rows by state: pending, sent, dead, skipped."""
        await self.open()
        return await self._db(
            self.outbox.counts,
        )

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> int:
        """Queue messages made outside an alarm write (:mod:`notify.orders`) and look now."""
        if not entries:
            return 0
        await self.open()
        n = await self._db(self.outbox.enqueue, entries)
        self.wake()
        return n

    # -- running -------------------------------------------------------------------------------
    def wake(self) -> None:
        """Look for due rows now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Open the outbox and deliver until :meth:`stop` (or cancellation)."""
        await self.open()
        try:
            while not self._stop.is_set():
                try:
                    n = await self.run_once()
                    await self._maybe_purge()
                except ServiceUnavailable as exc:
                    log.warning("notify: outbox unavailable, retrying: %s", exc)
                    self.stats["outbox_unavailable"] += 1
                    n = 0
                if n == 0:
                    with contextlib.suppress(TimeoutError):
                        await aio.wait_for(self._wake.wait(), self.config.poll_interval_s)
                    self._wake.clear()
        finally:
            self._opened = False
            with contextlib.suppress(Exception):
                await self.outbox.close()
            if self._own_http:
                await self.http.aclose()

    async def _maybe_purge(self) -> None:
        now = self.clock()
        if now - self._last_purge >= HOUR_MS:
            self._last_purge = now
            await self._db(self.outbox.purge, now - self.config.keep_sent_days * DAY_MS)

    async def run_once(self) -> int:
        """Claim one batch of due rows and settle every one of them; returns how many."""
        cfg = self.config
        now = self.clock()
        rows = await self._db(
            self.outbox.claim, now, int(cfg.lease_s * 1000), cfg.claim_batch, self.owner
        )
        if not rows:
            return 0
        claimed = len(rows)
        self.stats["claimed"] += claimed
        rows = await self._drop_acknowledged(rows, now)
        deliveries = await self._plan(rows, now)
        sem = asyncio.Semaphore(cfg.concurrency)

        async def one(d: _Delivery) -> None:
            async with sem:
                await self._settle(d)

        # Every delivery finishes before the cycle ends, even when one of them fails.
        results = await asyncio.gather(*(one(d) for d in deliveries), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                raise res
        return claimed

    async def _drop_acknowledged(self, rows: list[OutboxRow], now: int) -> list[OutboxRow]:
        esc = [r for r in rows if r.purpose == "escalate"]
        if not esc:
            return rows
        ids = sorted({r.alarm_id for r in esc})
        if self.is_acknowledged is not None:
            acked = {a for a in ids if self.is_acknowledged(a)}
        else:
            acked = await self._db(self.outbox.acknowledged, ids)
        skip = [r.id for r in esc if r.alarm_id in acked]
        if skip:
            await self._db(self.outbox.mark_skipped, skip, now, "acknowledged before escalation")
            self.stats["skipped"] += len(skip)
        return [r for r in rows if r.id not in set(skip)]

    async def _plan(self, rows: list[OutboxRow], now: int) -> list[_Delivery]:
        out: list[_Delivery] = []
        by_digest: dict[str, list[OutboxRow]] = {}
        fresh: list[OutboxRow] = []
        for r in rows:
            if r.digest is not None:
                by_digest.setdefault(r.digest, []).append(r)
            else:
                fresh.append(r)
        for tag, members in by_digest.items():
            out.append(_Delivery(tuple(members), tag, True))
        groups = split_by_target([(r.route, r.channel) for r in fresh])
        for (route, channel), idx in groups.items():
            target = [fresh[i] for i in idx]
            gate = self._gates.get((route, channel))
            if gate is None:
                try:
                    per_minute = self.config.route(route).storm_per_minute
                except KeyError:
                    per_minute = 10  # route removed from the configuration: still deliver
                gate = self._gates[(route, channel)] = StormGate(per_minute)
            d = gate.decide(now, len(target))
            out.extend(
                _Delivery((target[i],), delivery_key(target[i].key), False) for i in d.single
            )
            if d.digest:
                members = [target[i] for i in d.digest]
                tag = digest_key(r.key for r in members)
                await self._db(self.outbox.set_digest, [r.id for r in members], self.owner, tag)
                out.append(_Delivery(tuple(members), tag, True))
                self.stats["digests"] += 1
            if d.deferred and d.defer_until is not None:
                await self._db(
                    self.outbox.defer,
                    [target[i].id for i in d.deferred],
                    self.owner,
                    now,
                    d.defer_until,
                )
                self.stats["deferred"] += len(d.deferred)
        return out

    async def _settle(self, d: _Delivery) -> None:
        ids = [r.id for r in d.rows]
        try:
            await self._deliver(d)
        except DeliveryFailed as exc:
            await self._failed(d, str(exc), exc.permanent)
        except ServiceUnavailable:
            raise
        except Exception as exc:  # a bug rendering this message must not stop the others
            log.exception("notify: delivering %s failed unexpectedly", d.key)
            await self._failed(d, f"{type(exc).__name__}: {exc}", False)
        else:
            await self._db(self.outbox.mark_sent, ids, self.clock())
            self.stats["sent"] += len(ids)

    async def _failed(self, d: _Delivery, error: str, permanent: bool) -> None:
        cfg = self.config
        now = self.clock()
        attempt = max(r.attempts for r in d.rows) + 1
        delay = backoff_ms(attempt, cfg.backoff_initial_s, cfg.backoff_max_s, self.rng.random())
        n = await self._db(
            self.outbox.mark_failed,
            [r.id for r in d.rows],
            self.owner,
            now,
            now + delay,
            error,
            cfg.max_attempts,
            permanent,
        )
        dead = permanent or attempt >= cfg.max_attempts
        self.stats["dead" if dead else "failed"] += n
        log.warning(
            "notify: %s to %s failed (try %d%s): %s",
            d.key,
            d.rows[0].channel,
            attempt,
            ", gave up" if dead else f", next in {delay / 1000:.1f} s",
            error,
        )

    async def _deliver(self, d: _Delivery) -> None:
        name = d.rows[0].channel
        try:
            ch = self.config.channel(name)
        except KeyError:
            raise DeliveryFailed(name, "channel no longer configured", permanent=True) from None
        notices = [r.notice for r in d.rows]
        now = self.clock()
        url = notices[0].link.split("#", 1)[0] + "#alarms"
        if d.digest:
            subject = digest_subject(notices)
            md = digest_markdown(notices, self.config.digest_max_items, url)
        else:
            subject = notice_subject(notices[0])
            md = notice_markdown(notices[0])
        if isinstance(ch, WebhookChannel):
            body = webhook_body(d.key, notices, md, d.digest)
            await self.http.send(webhook_request(ch, body, d.key, now))
        elif isinstance(ch, WeComChannel):
            await self.http.send(wecom_request(ch, md, d.key))
        elif isinstance(ch, DingTalkChannel):
            await self.http.send(dingtalk_request(ch, subject, md, d.key, now))
        elif isinstance(ch, SmsChannel):
            await self.http.send(sms_request(ch, notices, d.key, now))
        else:
            text = (
                digest_text(notices, self.config.digest_max_items, url)
                if d.digest
                else notice_text(notices[0])
            )
            await self.mailer(ch, email_message(ch, subject, text, d.key, now))


def build_notifier(config: NotifyConfig, store: HistoryDatabase, **kwargs: Any) -> Notifier:
    """The worker for the history store's database (the outbox lives beside the alarms)."""
    outbox: Outbox
    if store.kind == "sqlite":
        outbox = ThreadedSQLiteOutbox(store.sqlite_path)
    elif store.kind == "postgres":
        outbox = PostgresOutbox(store.postgres_dsn, store.postgres_schema, store.connect_timeout_s)
    else:
        raise Misuse('notifications need [store] kind = "sqlite" or "postgres"')
    return Notifier(config, outbox, **kwargs)
