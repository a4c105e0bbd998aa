"""The load generator of ``fleetwatch bench e2e``: a minimal MQTT 3.1.1 QoS 0 / QoS 1 publisher.

Why not paho: a paho ``publish()`` costs about 20 µs of Python per message, so
at 50,000 messages/s the publisher alone would take a whole core of the two
this machine has, and the benchmark would measure the publisher. Here every
message is a pre-built PUBLISH packet (fixed header, topic, JSON body) into
which only the 13-digit ``ts`` is spliced, and one ``sendall`` carries a few
milliseconds' worth of packets: about 1 µs per message.

The packets are ordinary MQTT 3.1.1 (OASIS MQTT 3.1.1, section 3.3): the
broker parses, routes and forwards each message exactly as it would a
terminal's. To know that the broker has taken every packet sent so far, the
publisher sends PINGREQ and waits for PINGRESP — the broker handles one
connection's packets in order (section 4.6).

At QoS 1 (the no-loss configuration: a terminal's gateway publishes at QoS 1
and answers the terminal after the broker's PUBACK) each packet carries a
packet id, cycling through 1..65535 — the broker acknowledges a QoS 1 PUBLISH
at once and keeps no state for its id — and a reader thread drains the
broker's PUBACKs and counts them; the PINGREQ round trip then also waits until
every PUBACK has come back.

Run in a process of its own (:func:`publisher_main`), several side by side,
each owning the vehicles ``v`` with ``v % count == index``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ingest.mqtt_wire import varint

__all__ = ["encode_connect", "encode_publish", "position_body", "publisher_main"]

_TS_DIGITS = 13  # epoch ms from 2001 to 2286: the body's length does not change with ts


def _str(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def encode_connect(client_id: str) -> bytes:
    """CONNECT, clean session, no keep-alive (so the broker never expects PINGREQ)."""
    var = _str(b"MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big")
    body = var + _str(client_id.encode())
    return b"\x10" + varint(len(body)) + body


def encode_publish(topic: str, payload: bytes, packet_id: int = 0) -> bytes:
    """A QoS 0 PUBLISH packet, or a QoS 1 one when ``packet_id`` is given."""
    if packet_id:
        body = _str(topic.encode()) + packet_id.to_bytes(2, "big") + payload
        return b"\x32" + varint(len(body)) + body
    body = _str(topic.encode()) + payload
    return b"\x30" + varint(len(body)) + body


# Packet ids 1..65535 (0 is not allowed, MQTT 3.1.1 section 2.3.1), pre-encoded.
_PIDS = [i.to_bytes(2, "big") for i in range(1, 65536)]


def position_body(ts: int, lat: float, lon: float, alarm: int) -> bytes:
    """The JSON position of the MQTT contract (ARCHITECTURE.md, "Interfaces")."""
    return (
        f'{{"ts":{ts},"lat":{lat:.6f},"lon":{lon:.6f},"speed":42.5,'
        f'"heading":90,"acc":true,"alarm":{alarm}}}'
    ).encode()


class _Vehicle:
    """Pre-built pieces of one vehicle's PUBLISH packet, around the ``ts`` digits.

    QoS 0: ``head + ts + tail``. QoS 1: ``head1 + packet id + mid1 + ts + tail``.
    """

    __slots__ = ("head", "head1", "mid1", "tail", "tail_sos")

    def __init__(self, topic: str, lat: float, lon: float) -> None:
        marker = 1_000_000_000_000
        halves = []
        for alarm in (0, 1):
            pkt = encode_publish(topic, position_body(marker, lat, lon, alarm))
            i = pkt.index(str(marker).encode())
            halves.append((pkt[:i], pkt[i + _TS_DIGITS :]))
        self.head: bytes = halves[0][0]
        self.tail: bytes = halves[0][1]
        self.tail_sos: bytes = halves[1][1]
        pkt1 = encode_publish(topic, position_body(marker, lat, lon, 0), packet_id=0xFFFF)
        i = pkt1.index(str(marker).encode())
        j = pkt1.index(b"\xff\xff")
        self.head1: bytes = pkt1[:j]
        self.mid1: bytes = pkt1[j + 2 : i]

    def parts(self, ts: bytes, sos: bool, pid: bytes | None) -> tuple[bytes, ...]:
        tail = self.tail_sos if sos else self.tail
        if pid is None:
            return (self.head, ts, tail)
        return (self.head1, pid, self.mid1, ts, tail)


class _Acks:
    """A thread reading the broker's PUBACKs (4 bytes) and PINGRESPs (2 bytes)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pubacks = 0
        self.pong = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        rest = b""
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return
                buf = rest + data
                i, n = 0, len(buf)
                while n - i >= 2:
                    if buf[i] == 0x40:  # PUBACK, remaining length 2
                        if n - i < 4:
                            break
                        self.pubacks += 1
                        i += 4
                    elif buf[i] == 0xD0:  # PINGRESP
                        self.pong.set()
                        i += 2
                    else:
                        self.error = f"unexpected packet type {buf[i] >> 4} from broker"
                        return
                rest = buf[i:]
        except OSError as exc:
            self.error = str(exc)


def _connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.sendall(encode_connect(client_id))
    ack = _recv_exact(sock, 4)
    if ack[0] != 0x20 or ack[3] != 0:
        raise RuntimeError(f"broker refused the connection: {ack!r}")
    return sock


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("broker closed the connection")
        buf += chunk
    return buf


def _sync(sock: socket.socket, reader: _Acks) -> None:
    """Return once the broker has handled every packet sent before (PINGREQ → PINGRESP)."""
    reader.pong.clear()
    sock.sendall(b"\xc0\x00")
    if not reader.pong.wait(60):
        raise RuntimeError(f"no PINGRESP within 60 s ({reader.error})")


def _sos_order(mine: list[int]) -> Iterator[int]:
    # Each vehicle raises SOS once per pass; an episode stays open while the bit is set
    # and 30 s after (rules.terminal_alarm.close_after_s), so reuse would hide alarms.
    while True:
        yield from mine


def publisher_main(
    port: int,
    prefix: str,
    index: int,
    count: int,
    n_vehicles: int,
    cmd: Any,
    out: Any,
) -> None:
    """Serve jobs from ``cmd`` until ``None``; put one report per job on ``out``.

    Jobs: ``("rate", msgs_per_s, seconds, sos_per_s)`` publishes this process's
    share of the vehicles round-robin at ``msgs_per_s`` (its share of the
    total); ``("burst", n)`` publishes ``n`` messages as fast as the broker
    takes them. An optional last element of either job is the QoS (0 or 1) of
    its messages; at QoS 1 the report says how many PUBACKs have come back (all
    of them once the PINGREQ round trip that ends a job has returned).
    """
    mine = list(range(index, n_vehicles, count))
    vehicles = {
        v: _Vehicle(
            f"{prefix}fleet/139{v:08d}/position",
            30.40 + (v % 100) * 0.001,
            106.58 + (v // 100) * 0.001,
        )
        for v in mine
    }
    sos_iter = _sos_order(mine)
    sock = _connect(port, f"{prefix}pub{index}")
    reader = _Acks(sock)  # reads PINGRESPs, and the PUBACKs of QoS 1 jobs
    pid = 0
    k = 0
    try:
        while True:
            job = cmd.get()
            if job is None:
                break
            if job[0] == "burst":
                qos = int(job[2]) if len(job) > 2 else 0
                out.put(_burst(sock, vehicles, mine, int(job[1]), reader, qos))
                continue
            _, rate, duration, sos_per_s, *rest = job
            qos = int(rest[0]) if rest else 0
            acks = reader if qos else None
            pubacks0 = reader.pubacks
            sent = 0
            last: dict[int, int] = {}
            sos: list[tuple[int, int]] = []
            sos_due = 0
            t0 = time.perf_counter()
            wall0_ms = time.time() * 1000.0
            while True:
                el = time.perf_counter() - t0
                if el >= duration:
                    break
                due = int(el * rate) - sent
                if due > 0:
                    now_ms = int(wall0_ms + el * 1000.0)
                    ts = str(now_ms).encode()
                    want_sos = int(el * sos_per_s) - sos_due
                    sos_v = -1
                    if want_sos > 0:
                        sos_v = next(sos_iter)
                        sos_due += 1
                        sos.append((sos_v, now_ms))
                    parts: list[bytes] = []
                    n = len(mine)
                    for _ in range(due):
                        v = mine[k % n]
                        k += 1
                        veh = vehicles[v]
                        if acks is None:
                            parts.append(veh.head)
                            parts.append(ts)
                            parts.append(veh.tail_sos if v == sos_v else veh.tail)
                        else:
                            pid = pid + 1 if pid < 65534 else 0
                            parts += veh.parts(ts, v == sos_v, _PIDS[pid])
                        last[v] = now_ms
                        if v == sos_v:
                            sos_v = -1
                    if sos_v >= 0:  # this tick did not reach the chosen vehicle: send it now
                        veh = vehicles[sos_v]
                        pid = pid + 1 if pid < 65534 else 0
                        parts += veh.parts(ts, True, _PIDS[pid] if acks is not None else None)
                        last[sos_v] = now_ms
                        sent += 1
                    sock.sendall(b"".join(parts))
                    sent += due
                time.sleep(0.002)
            elapsed = time.perf_counter() - t0  # before the PINGREQ round trip
            _sync(sock, reader)
            out.put(
                {
                    "sent": sent,
                    "elapsed": elapsed,
                    "last": last,
                    "sos": sos,
                    "pubacks": reader.pubacks - pubacks0,
                }
            )
    finally:
        sock.close()


def _burst(
    sock: socket.socket,
    vehicles: dict[int, _Vehicle],
    mine: list[int],
    n: int,
    reader: _Acks,
    qos: int = 0,
) -> dict[str, Any]:
    ts = str(int(time.time() * 1000)).encode()
    chunk = 2000
    t0 = time.perf_counter()
    k = 0
    while k < n:
        m = min(chunk, n - k)
        parts: list[bytes] = []
        for i in range(k, k + m):
            veh = vehicles[mine[i % len(mine)]]
            parts += veh.parts(ts, False, _PIDS[i % 65535] if qos else None)
        sock.sendall(b"".join(parts))
        k += m
    _sync(sock, reader)
    return {"sent": n, "elapsed": time.perf_counter() - t0}
