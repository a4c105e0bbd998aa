"""The one exception hierarchy of FleetWatch.

::

    FleetWatchError
    ├── BadRecord            the peer sent garbage: count it, keep it, go on
    │   └── FrameError       a JT/T 808 frame that cannot be decoded
    ├── ServiceUnavailable   a broker, database or cache is down: retry, degrade, alert
    ├── ConfigError          the configuration file is wrong: names file, key and fix
    └── Misuse               the caller broke an API rule: a bug, raise it

A ``BadRecord`` never stops the pipeline; it becomes a dead letter. A
``ServiceUnavailable`` is handled by the adapter that talks to that service.
``ConfigError`` stops start-up with a message meant for the person who wrote
the file. ``Misuse`` is a programming error.
"""

from __future__ import annotations


class FleetWatchError(Exception):
    """Base class of every error FleetWatch raises on purpose."""


class BadRecord(FleetWatchError):
    """One input record (payload, frame, position) is invalid.

    ``reason`` is a short stable code used as a metric label and dead-letter
    reason (``invalid_json``, ``missing_field``, ...); ``detail`` is for humans.
    """

    def __init__(self, reason: str, detail: str = "", *, terminal: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.terminal = terminal
        where = f" (terminal {terminal})" if terminal else ""
        super().__init__(f"{reason}{where}: {detail}" if detail else f"{reason}{where}")


class FrameError(BadRecord):
    """A JT/T 808 frame is malformed (escape, checksum, length, header...)."""


class ServiceUnavailable(FleetWatchError):
    """An external service (MQTT broker, PostgreSQL, Redis, SMTP...) cannot be reached."""

    def __init__(self, service: str, detail: str = "") -> None:
        self.service = service
        self.detail = detail
        super().__init__(f"{service} unavailable: {detail}" if detail else f"{service} unavailable")


class ConfigError(FleetWatchError):
    """The configuration is invalid. The message names the file, the key and the fix."""

    def __init__(self, file: str, key: str, problem: str, fix: str = "") -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.fix = fix
        msg = f"{file}: {key}: {problem}"
        if fix:
            msg += f" — fix: {fix}"
        super().__init__(msg)


class Misuse(FleetWatchError):
    """An API was called in a way its documentation forbids."""
