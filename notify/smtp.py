"""E-mail delivery with the standard library's smtplib, run in a worker thread.

SMTP replies map to :class:`~notify.channels.DeliveryFailed`: 5xx (and refused
recipients) are permanent, 4xx and connection problems are retried.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from notify.channels import DeliveryFailed
from notify.config import EmailChannel

__all__ = ["send_email", "send_email_sync"]


def send_email_sync(ch: EmailChannel, msg: EmailMessage) -> None:
    try:
        smtp: smtplib.SMTP
        if ch.security == "tls":
            smtp = smtplib.SMTP_SSL(
                ch.host, ch.port, timeout=ch.timeout_s, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_s)
        with smtp:
            if ch.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if ch.username is not None and ch.password is not None:
                smtp.login(ch.username, ch.password.get_secret_value())
            smtp.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(map(str, exc.recipients))
        raise DeliveryFailed(ch.name, f"recipients refused: {refused}", permanent=True) from exc
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        raise DeliveryFailed(
            ch.name, f"SMTP {exc.smtp_code} {text}", permanent=500 <= exc.smtp_code < 600
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryFailed(ch.name, f"{type(exc).__name__}: {exc}") from exc


async def send_email(ch: EmailChannel, msg: EmailMessage) -> None:
    await asyncio.to_thread(send_email_sync, ch, msg)
