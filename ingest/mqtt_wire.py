"""MQTT on the wire, client side, sans I/O: the packets to send and the packets received.

Used by :mod:`ingest.mqtt_fast`. Feed :meth:`MqttWire.feed` whatever bytes the
socket gave; PUBLISH packets go straight to a callback, other packets come back
as a list. Covers what an ingest subscriber needs of MQTT 3.1.1 and MQTT 5:
CONNECT, SUBSCRIBE, PUBACK (many per write), PINGREQ, DISCONNECT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fleet.errors import ServiceUnavailable

__all__ = [
    "CONNACK",
    "DISCONNECT",
    "KEEPALIVE_S",
    "PINGRESP",
    "PUBLISH",
    "SUBACK",
    "MqttWire",
    "varint",
]

KEEPALIVE_S = 30

# MQTT control packet types (MQTT 3.1.1 section 2.2.1; the same numbers in MQTT 5).
CONNACK, PUBLISH, SUBACK, PINGRESP, DISCONNECT = 2, 3, 9, 13, 14

OnPublish = Callable[[str, bytes, int, int], None]


def varint(n: int) -> bytes:
    """Variable byte integer (MQTT 3.1.1 section 2.2.3, MQTT 5 section 1.5.5)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


class MqttWire:
    """The client side of MQTT as bytes: packets to send, and the packets in what was received.

    No I/O. Build packets with :meth:`connect`, :meth:`subscribe`,
    :meth:`pubacks`; call :meth:`feed` with every chunk the socket gives, in
    order — it calls ``on_publish(topic, payload, qos, packet_id)`` for each
    complete PUBLISH and returns the other complete packets as
    ``(type, flags, body)``. A packet split across chunks is kept until it is
    whole.
    """

    PINGREQ = b"\xc0\x00"
    DISCONNECT = b"\xe0\x00"  # MQTT 5: reason 0 (normal) is implied by the empty body

    def __init__(self, *, v5: bool) -> None:
        self.v5 = v5
        self._rest = b""

    def connect(
        self,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = KEEPALIVE_S,
        clean: bool = True,
        session_expiry_s: int = 0,
        receive_maximum: int = 65535,
    ) -> bytes:
        flags = 0x02 if clean else 0
        if username is not None:
            flags |= 0x80
        if password is not None and (username is not None or self.v5):
            flags |= 0x40
        var = _utf8("MQTT") + bytes([5 if self.v5 else 4, flags]) + keepalive.to_bytes(2, "big")
        if self.v5:
            props = b"\x11" + session_expiry_s.to_bytes(4, "big")  # Session Expiry Interval
            props += b"\x21" + receive_maximum.to_bytes(2, "big")  # Receive Maximum
            var += varint(len(props)) + props
        body = var + _utf8(client_id)
        if flags & 0x80:
            body += _utf8(username or "")
        if flags & 0x40:
            body += _utf8(password or "")
        return b"\x10" + varint(len(body)) + body

    def subscribe(self, packet_id: int, filters: Sequence[str], qos: int) -> bytes:
        body = packet_id.to_bytes(2, "big")
        if self.v5:
            body += b"\x00"  # no properties
        for f in filters:
            body += _utf8(f) + bytes([qos])
        return b"\x82" + varint(len(body)) + body

    @staticmethod
    def pubacks(packet_ids: Sequence[int]) -> bytes:
        """One PUBACK per id, back to back (remaining length 2: reason "success" in MQTT 5)."""
        ids = np.asarray(packet_ids, dtype=np.uint16)
        out = np.empty((ids.shape[0], 4), dtype=np.uint8)
        out[:, 0] = 0x40
        out[:, 1] = 2
        out[:, 2] = ids >> 8
        out[:, 3] = ids & 0xFF
        return out.tobytes()

    def feed(self, data: bytes, on_publish: OnPublish) -> list[tuple[int, int, bytes]]:
        """Hand every complete PUBLISH in ``data`` to ``on_publish``; return the other packets.

        Raises :class:`ServiceUnavailable` on bytes that are not MQTT.
        """
        if self._rest:
            data = self._rest + data
        n = len(data)
        pos = 0
        v5 = self.v5
        others: list[tuple[int, int, bytes]] = []
        while n - pos >= 2:
            first = data[pos]
            i = pos + 1
            length = data[i]
            i += 1
            if length >= 128:
                length &= 127
                shift = 7
                while True:
                    if i >= n:
                        length = -1
                        break
                    b = data[i]
                    i += 1
                    length |= (b & 127) << shift
                    if b < 128:
                        break
                    shift += 7
                    if shift > 21:
                        raise ServiceUnavailable("mqtt", "malformed remaining length from broker")
                if length < 0:
                    break
            end = i + length
            if end > n:
                break
            if first >> 4 == PUBLISH:
                j = i + 2 + ((data[i] << 8) | data[i + 1])
                topic = data[i + 2 : j].decode(errors="replace")
                qos = (first >> 1) & 3
                mid = 0
                if qos:
                    mid = (data[j] << 8) | data[j + 1]
                    j += 2
                if v5:  # skip the properties (no topic alias: we allow none)
                    plen = data[j]
                    j += 1
                    if plen >= 128:
                        plen &= 127
                        shift = 7
                        while True:
                            b = data[j]
                            j += 1
                            plen |= (b & 127) << shift
                            if b < 128:
                                break
                            shift += 7
                    j += plen
                if j > end:
                    raise ServiceUnavailable("mqtt", "malformed PUBLISH from broker")
                on_publish(topic, data[j:end], qos, mid)
            else:
                others.append((first >> 4, first & 15, data[i:end]))
            pos = end
        self._rest = data[pos:]
        return others
