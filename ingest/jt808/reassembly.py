"""Reassembly of split (sub-packaged) messages (JT/T 808-2019 §4.4.3, props bit 13).

The sub-packages of one message carry consecutive serial numbers, so the
first package's serial is ``serial - (index - 1)``; a message is keyed by
(phone, msg_id, total, first serial). Pending messages are bounded in number,
in bytes and in age; what is dropped is reported, never silently lost.

Pure: time is passed in. The decoder CLI uses :meth:`Reassembler.feed` (the
whole message decoded); the gateway uses :meth:`Reassembler.add`, which keeps
each sub-package's raw frame so that the message can be published as the
terminal sent it and every sub-package answered under its own serial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.errors import FrameError
from ingest.jt808.codec import Decoded
from ingest.jt808.frame import Header
from ingest.jt808.messages import SplitPart, decode_body

__all__ = ["Reassembler", "Whole"]

_Key = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class Whole:
    """A split message whose last sub-package arrived.

    ``parts`` holds each sub-package's header and raw frame (as given to
    :meth:`Reassembler.add`), in index order; ``header`` and ``body`` are the
    message put back together (not decoded yet: see :meth:`Reassembler.decode`).
    """

    header: Header
    body: bytes
    parts: tuple[tuple[Header, bytes], ...]
    quirks: tuple[str, ...] = ()


@dataclass
class _Pending:
    first_seen_ms: int
    parts: dict[int, tuple[Header, bytes, bytes]] = field(default_factory=dict)
    size: int = 0  # bytes held: data and raw frames


class Reassembler:
    """Collect :class:`SplitPart` frames; hand back the whole message when complete.

    Call :meth:`add` (or :meth:`feed`) with each decoded sub-package and the
    current time, then :meth:`expire` now and then; all are pure (time passed in).
    Bounds: ``max_pending`` messages, ``max_bytes`` held over all of them,
    ``max_age_ms`` from a message's first sub-package.
    """

    def __init__(
        self,
        *,
        max_pending: int = 64,
        max_age_ms: int = 60_000,
        max_bytes: int = 1 << 20,
        lenient: bool = False,
    ) -> None:
        self.max_pending = max_pending
        self.max_age_ms = max_age_ms
        self.max_bytes = max_bytes
        self.lenient = lenient
        self._pending: dict[_Key, _Pending] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def bytes_held(self) -> int:
        """Bytes of the sub-packages waiting for the rest of their message."""
        return self._bytes

    def add(self, decoded: Decoded, raw: bytes, now_ms: int) -> Whole | None:
        """Add one sub-package (``raw`` is its frame, kept for :attr:`Whole.parts`).

        Returns the :class:`Whole` message when its last part arrives, else None.
        Raises :class:`FrameError`: ``split`` for a duplicate part (nothing
        changes); ``split_overflow`` when the bounds made it drop whole pending
        messages, oldest first (this part is kept unless its own message was the
        one dropped, which the detail says).
        """
        part = decoded.message
        if not isinstance(part, SplitPart):
            raise TypeError("add() takes a decoded sub-package (SplitPart)")
        h = decoded.header
        first = (h.serial - (part.index - 1)) & 0xFFFF
        key = (h.phone, part.msg_id, part.total, first)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending(now_ms)
        elif part.index in pending.parts:
            raise FrameError("split", f"duplicate sub-package {part.index}", terminal=h.phone)
        pending.parts[part.index] = (h, part.data, raw)
        size = len(part.data) + len(raw)
        pending.size += size
        self._bytes += size
        if len(pending.parts) == part.total:
            self._drop(key)
            body = b"".join(pending.parts[i][1] for i in range(1, part.total + 1))
            whole = Header(
                msg_id=part.msg_id,
                phone=h.phone,
                serial=first,
                version=h.version,
                proto_version=h.proto_version,
                body_length=len(body),
            )
            parts = tuple((p[0], p[2]) for _, p in sorted(pending.parts.items()))
            return Whole(whole, body, parts, decoded.quirks)
        dropped: list[_Key] = []
        while len(self._pending) > self.max_pending or self._bytes > self.max_bytes:
            oldest = min(self._pending, key=lambda k: self._pending[k].first_seen_ms)
            self._drop(oldest)
            dropped.append(oldest)
        if dropped:
            what = ", ".join(f"0x{k[1]:04X} from serial {k[3]}" for k in dropped)
            raise FrameError(
                "split_overflow",
                f"more than {self.max_pending} split messages or {self.max_bytes} bytes "
                f"pending; dropped {what}",
                terminal=h.phone,
            )
        return None

    def feed(self, decoded: Decoded, now_ms: int) -> Decoded | None:
        """Like :meth:`add`, but returns the whole message decoded (or ``decoded`` itself
        if it is not a sub-package). Raises :class:`FrameError` as :meth:`add` does, or
        from decoding the reassembled body."""
        if not isinstance(decoded.message, SplitPart):
            return decoded
        whole = self.add(decoded, b"", now_ms)
        return None if whole is None else self.decode(whole)

    def decode(self, whole: Whole) -> Decoded:
        """The reassembled message's body decoded. Raises :class:`FrameError`."""
        msg = decode_body(
            whole.header.msg_id, whole.body, version=whole.header.version, lenient=self.lenient
        )
        return Decoded(whole.header, msg, whole.quirks)

    def next_expiry_ms(self) -> int | None:
        """When :meth:`expire` will next drop something, or None with nothing pending."""
        if not self._pending:
            return None
        return min(p.first_seen_ms for p in self._pending.values()) + self.max_age_ms + 1

    def expire(self, now_ms: int) -> list[FrameError]:
        """Drop messages whose parts are older than ``max_age_ms``; one error each."""
        out: list[FrameError] = []
        for key, p in list(self._pending.items()):
            if now_ms - p.first_seen_ms > self.max_age_ms:
                self._drop(key)
                out.append(
                    FrameError(
                        "split_incomplete",
                        f"0x{key[1]:04X}: {len(p.parts)} of {key[2]} sub-packages arrived",
                        terminal=key[0],
                    )
                )
        return out

    def _drop(self, key: _Key) -> None:
        p = self._pending.pop(key)
        self._bytes -= p.size
