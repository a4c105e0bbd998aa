"""Reassembly of split (sub-packaged) messages (JT/T 808-2019 §4.4.3, props bit 13).

The sub-packages of one message carry consecutive serial numbers, so the
first package's serial is ``serial - (index - 1)``; a message is keyed by
(phone, msg_id, total, first serial). Pending messages are bounded in number
and age; what is dropped is reported, never silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetwatch.errors import FrameError
from ingest.jt808.codec import Decoded
from ingest.jt808.frame import Header
from ingest.jt808.messages import SplitPart, decode_body

__all__ = ["Reassembler"]

_Key = tuple[str, int, int, int]


@dataclass
class _Pending:
    header: Header
    first_seen_ms: int
    parts: dict[int, bytes] = field(default_factory=dict)


class Reassembler:
    """Collect :class:`SplitPart` frames; hand back the whole message when complete.

    Call :meth:`feed` with each decoded sub-package and the current time, then
    :meth:`expire` now and then; both are pure (time passed in).
    """

    def __init__(self, *, max_pending: int = 64, max_age_ms: int = 60_000, lenient: bool = False):
        self.max_pending = max_pending
        self.max_age_ms = max_age_ms
        self.lenient = lenient
        self._pending: dict[_Key, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def feed(self, decoded: Decoded, now_ms: int) -> Decoded | None:
        """Add one sub-package. Returns the reassembled message when the last part arrives.

        Raises :class:`FrameError` (``split``) for a duplicate part or when too
        many messages are pending (the oldest is dropped to make room).
        """
        part = decoded.message
        if not isinstance(part, SplitPart):
            return decoded
        h = decoded.header
        first = (h.serial - (part.index - 1)) & 0xFFFF
        key = (h.phone, part.msg_id, part.total, first)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].first_seen_ms)
                del self._pending[oldest]
                self._pending[key] = _Pending(h, now_ms, {part.index: part.data})
                raise FrameError(
                    "split", f"too many split messages pending; dropped {oldest}", terminal=h.phone
                )
            pending = self._pending[key] = _Pending(h, now_ms)
        if part.index in pending.parts:
            raise FrameError("split", f"duplicate sub-package {part.index}", terminal=h.phone)
        pending.parts[part.index] = part.data
        if len(pending.parts) < part.total:
            return None
        del self._pending[key]
        body = b"".join(pending.parts[i] for i in range(1, part.total + 1))
        whole = Header(
            msg_id=part.msg_id,
            phone=h.phone,
            serial=first,
            version=h.version,
            proto_version=h.proto_version,
            body_length=len(body),
        )
        msg = decode_body(part.msg_id, body, version=h.version, lenient=self.lenient)
        return Decoded(whole, msg, decoded.quirks)

    def expire(self, now_ms: int) -> list[FrameError]:
        """Drop messages whose parts are older than ``max_age_ms``; one error each."""
        out: list[FrameError] = []
        for key, p in list(self._pending.items()):
            if now_ms - p.first_seen_ms > self.max_age_ms:
                del self._pending[key]
                out.append(
                    FrameError(
                        "split_incomplete",
                        f"0x{key[1]:04X}: {len(p.parts)} of {key[2]} sub-packages arrived",
                        terminal=key[0],
                    )
                )
        return out
