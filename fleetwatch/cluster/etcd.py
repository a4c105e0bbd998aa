"""The etcd adapter of an engine node, over etcd3gw (etcd's v3 JSON gateway).

etcd3gw is synchronous (requests); every call here runs in a worker thread with
a request time-out of ``timeout_s``, so a hung etcd never blocks the event loop
and never delays the fencing check (which does not wait for etcd at all).

Keys (``prefix`` = ``cluster.prefix``)::

    {prefix}/nodes/{node}            {"node", "pid", "http"}           under the node's lease
    {prefix}/partitions/{k}/owner    {"node", "epoch"}                 under the node's lease

A claim is one transaction: *if the key's create_revision is 0 (absent), put it with
the lease*. The epoch is the transaction's revision — etcd revisions only grow, so
every later owner of a partition has a higher epoch than every earlier one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import etcd3gw.exceptions

from fleet.errors import ServiceUnavailable
from fleetwatch.cluster.ownership import Owner

__all__ = ["EtcdCluster", "Snapshot"]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _prefix_end(prefix: str) -> str:
    """The range end of every key starting with ``prefix`` (last byte + 1)."""
    b = prefix.encode()
    return (b[:-1] + bytes([b[-1] + 1])).decode()


@dataclass(frozen=True, slots=True)
class Snapshot:
    nodes: set[str]
    owners: dict[int, Owner]
    revision: int


class EtcdCluster:
    """Lease, node registration, claims, releases and the listing, against one endpoint
    of ``cluster.etcd`` at a time (the next one is tried when a call fails)."""

    def __init__(
        self, endpoints: list[str], prefix: str, node: str, *, timeout_s: float = 1.0
    ) -> None:
        if not endpoints:
            raise ValueError("cluster.etcd lists no endpoint")
        self.endpoints = endpoints
        self.prefix = prefix.rstrip("/")
        self.node = node
        self.timeout_s = timeout_s
        self._i = 0
        self._client = self._make(0)
        self.lease_id: int | None = None
        self.calls_failed = 0

    def _make(self, i: int) -> Any:
        u = urlsplit(self.endpoints[i])
        return etcd3gw.client(
            host=u.hostname or "127.0.0.1",
            port=u.port or 2379,
            protocol=u.scheme or "http",
            timeout=self.timeout_s,
        )

    async def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kw)
        except (etcd3gw.exceptions.Etcd3Exception, OSError) as exc:
            self.calls_failed += 1
            self._i = (self._i + 1) % len(self.endpoints)
            self._client = self._make(self._i)
            raise ServiceUnavailable("etcd", str(exc) or type(exc).__name__) from exc

    def node_key(self, node: str) -> str:
        return f"{self.prefix}/nodes/{node}"

    def owner_key(self, k: int) -> str:
        return f"{self.prefix}/partitions/{k}/owner"

    # -- lease ----------------------------------------------------------------------------

    async def grant(self, ttl_s: int, info: dict[str, Any]) -> None:
        """A new lease, and this node's key under it."""
        c = self._client
        lease = await self._call(c.lease, ttl_s)
        self.lease_id = int(lease.id)
        body = json.dumps({"node": self.node, "pid": os.getpid(), **info})
        await self._call(c.put, self.node_key(self.node), body, lease=lease)

    async def keepalive(self) -> bool:
        """True while the lease lives; False when etcd says it expired."""
        if self.lease_id is None:
            return False
        c = self._client
        res = await self._call(c.post, c.get_url("/lease/keepalive"), json={"ID": self.lease_id})
        ttl = int(res.get("result", {}).get("TTL", -1))
        return ttl > 0

    async def revoke(self) -> None:
        """Drop the lease: every key under it (node, owned partitions) goes at once."""
        if self.lease_id is None:
            return
        c = self._client
        lease_id, self.lease_id = self.lease_id, None
        await self._call(c.post, c.get_url("/kv/lease/revoke"), json={"ID": lease_id})

    # -- partitions -----------------------------------------------------------------------

    async def claim(self, k: int) -> int | None:
        """Create the owner key of ``k`` if absent; the epoch, or None if someone has it."""
        if self.lease_id is None:
            return None
        key = _b64(self.owner_key(k))
        c = self._client
        # The value carries the epoch, which is this transaction's revision: unknown before
        # it runs. So the claim puts {"node"} and a second put (same lease, compare on the
        # create revision) writes the epoch; readers take the epoch from create_revision.
        txn = {
            "compare": [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            "success": [
                {
                    "request_put": {
                        "key": key,
                        "value": _b64(json.dumps({"node": self.node})),
                        "lease": self.lease_id,
                    }
                }
            ],
            "failure": [],
        }
        res = await self._call(c.transaction, txn)
        if not res.get("succeeded"):
            return None
        epoch = int(res["header"]["revision"])
        value = json.dumps({"node": self.node, "epoch": epoch})
        fill = {
            "compare": [
                {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": epoch}
            ],
            "success": [
                {"request_put": {"key": key, "value": _b64(value), "lease": self.lease_id}}
            ],
            "failure": [],
        }
        await self._call(c.transaction, fill)
        return epoch

    async def release(self, k: int, epoch: int) -> bool:
        """Delete the owner key of ``k`` if it is still this claim's (same create revision)."""
        key = _b64(self.owner_key(k))
        txn = {
            "compare": [
                {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": epoch}
            ],
            "success": [{"request_delete_range": {"key": key}}],
            "failure": [],
        }
        res = await self._call(self._client.transaction, txn)
        return bool(res.get("succeeded"))

    async def snapshot(self) -> Snapshot:
        """Live nodes and partition owners, in one read (one revision)."""
        c = self._client
        pre = self.prefix + "/"
        res = await self._call(
            c.post,
            c.get_url("/kv/range"),
            json={"key": _b64(pre), "range_end": _b64(_prefix_end(pre))},
        )
        nodes: set[str] = set()
        owners: dict[int, Owner] = {}
        for kv in res.get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            rest = key[len(pre) :].split("/")
            if rest[0] == "nodes" and len(rest) == 2:
                nodes.add(rest[1])
            elif rest[0] == "partitions" and len(rest) == 3 and rest[2] == "owner":
                try:
                    value = json.loads(base64.b64decode(kv.get("value", "")) or b"{}")
                    owners[int(rest[1])] = Owner(str(value["node"]), int(kv["create_revision"]))
                except (ValueError, KeyError):
                    continue  # a foreign or half-written key: not an owner
        return Snapshot(nodes, owners, int(res.get("header", {}).get("revision", 0)))
