"""Dead letters: input FleetWatch could not use, kept with the reason.

A dead letter is never silently dropped: it is counted by ``reason`` (a short
stable code, also the metric label) and written to the history store beside
the positions, raw payload included, so an engineer can see exactly what a
terminal sent.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DeadLetter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    ts_ms: int  # when FleetWatch received it, epoch ms UTC
    topic: str
    terminal: str | None
    reason: str
    detail: str
    payload: bytes
