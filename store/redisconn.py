"""One way to reach Redis for every part that shares it: plain URLs and Sentinel URLs.

The live state (:mod:`store.live`), the feed's fan-out (:mod:`store.fanout`) and the
command bus (:mod:`web.commands`) all take ``live.redis_url``. Two forms::

    redis://[:password@]host:port[/db]                  one server (redis-py's own URL forms,
    rediss://... unix://...                               passed to ``Redis.from_url``)
    redis+sentinel://[:password@]h1:p1,h2:p2[,...]/master[/db][?sentinel_password=...]

With Sentinel the client asks the sentinels which server is the master of the named
group before each new connection (``redis.asyncio.sentinel``), so after a failover the
next reconnect reaches the promoted replica. What a failover means for the alarms in
flight is for the writer to say (:mod:`store.fanout`: ``WAIT`` for a replica, or the
at-risk count). ``password`` is the data servers' password; the sentinels' own, when
they have one, is the ``sentinel_password`` query parameter.

:func:`parse_redis_url` is pure (it validates and explains); :func:`redis_client` builds
the asyncio client. :data:`REDIS_DOWN` is the set of exceptions that mean "Redis is not
reachable now" (retry, degrade), as opposed to a misuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.sentinel import Sentinel

from fleet.errors import Misuse

__all__ = ["REDIS_DOWN", "RedisTarget", "parse_redis_url", "redis_client"]

#: Redis unreachable, or a demoted master still answering (the Sentinel pool maps
#: ``READONLY`` to ConnectionError; a plain client sees ReadOnlyError itself).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    OSError,
)

SENTINEL_SCHEME = "redis+sentinel"
#: Time-outs for one connection attempt and one reply (seconds). A reply slower than
#: ``SOCKET_TIMEOUT_S`` counts as Redis down; blocking reads (XREAD BLOCK) stay below it.
CONNECT_TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """A parsed ``live.redis_url``: either ``url`` (one server) or sentinels + master name."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def sentinel(self) -> bool:
        return bool(self.sentinels)


def _fail(url: str, why: str) -> Misuse:
    shown = url.split("@")[-1]  # never echo a password
    return Misuse(
        f"live.redis_url {shown!r}: {why} (expected redis://host:port/db or "
        "redis+sentinel://h1:p1,h2:p2/master[/db])"
    )


def parse_redis_url(url: str) -> RedisTarget:
    """Validate a Redis URL; raises :class:`~fleet.errors.Misuse` naming what is wrong."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisTarget(url=url)
    if scheme != SENTINEL_SCHEME:
        raise _fail(url, f"unknown scheme {scheme!r}")
    parts = urlsplit(url)
    netloc = parts.netloc
    password: str | None = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1]) if ":" in auth else unquote(auth)
        password = password or None
    sentinels: list[tuple[str, int]] = []
    for hostport in netloc.split(","):
        host, sep, port = hostport.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(url, f"sentinel address {hostport!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise _fail(url, "the path must be /master or /master/db")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise _fail(url, f"database {path[1]!r} is not a number")
        db = int(path[1])
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise _fail(url, f"unknown parameter(s) {sorted(unknown)}")
    sentinel_password = query.get("sentinel_password", [None])[0]
    return RedisTarget(
        sentinels=tuple(sentinels),
        master=unquote(path[0]),
        db=db,
        password=password,
        sentinel_password=sentinel_password,
    )


class _SentinelMaster(aioredis.Redis):
    """The master's client; closing it also closes the connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager, self.sentinel_manager = self.sentinel_manager, None
        if manager is not None:
            for s in manager.sentinels:
                await s.aclose()


def redis_client(
    url: str,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    socket_timeout_s: float | None = SOCKET_TIMEOUT_S,
    **kw: Any,
) -> aioredis.Redis:
    """An asyncio client for ``url`` (plain or Sentinel); no I/O until first used."""
    target = parse_redis_url(url)
    opts: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        **kw,
    }
    if target.url is not None:
        return aioredis.Redis.from_url(target.url, **opts)
    sentinel_kwargs = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": socket_timeout_s,
        "password": target.sentinel_password,
    }
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = manager.master_for(
        target.master,
        redis_class=_SentinelMaster,
        db=target.db,
        password=target.password,
        **opts,
    )
    assert isinstance(client, _SentinelMaster)
    client.sentinel_manager = manager
    return client
