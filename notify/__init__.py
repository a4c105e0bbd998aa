"""Alarm notifications: a durable outbox, routing, and delivery to four channels.

::

    rules ─AlarmEvent─▶ history store ─┬─ alarm upsert ─┐ one transaction
                                       └─ enqueue_*() ──┘ (notify.outbox)
                                                │
                  notify.worker.Notifier: claim (lease) → route/storm → send → mark
                                                │
                    webhook (HMAC) · WeCom robot · DingTalk robot (signed) · e-mail

Pure parts: :mod:`notify.routing` (routes, quiet hours, storms, back-off),
:mod:`notify.message` (Chinese text), :mod:`notify.channels` (requests and
signatures). I/O: :mod:`notify.outbox` (SQL), :mod:`notify.http`,
:mod:`notify.smtp`, :mod:`notify.worker` (asyncio).
"""

from notify.config import NotifyConfig
from notify.outbox import (
    OUTBOX_DDL_POSTGRES,
    OUTBOX_DDL_SQLITE,
    enqueue_postgres,
    enqueue_postgres_sync,
    enqueue_sqlite,
    outbox_ddl_postgres,
)
from notify.routing import Router

__all__ = [
    "OUTBOX_DDL_POSTGRES",
    "OUTBOX_DDL_SQLITE",
    "NotifyConfig",
    "Router",
    "enqueue_postgres",
    "enqueue_postgres_sync",
    "enqueue_sqlite",
    "outbox_ddl_postgres",
]
