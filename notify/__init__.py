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

Only the configuration is imported here, so that loading the configuration does not load
the channels (httpx, SMTP). Import the rest from its module (``notify.outbox``,
``notify.routing``, ``notify.worker``).
"""

from notify.config import NotifyConfig

__all__ = ["NotifyConfig"]
