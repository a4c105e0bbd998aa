"""Compare the alarms FleetWatch raised with the violations the simulator injected.

Pure: lists in, a report out. An alarm *matches* an injected violation when
the vehicle and the kind agree and the alarm started between ``before_ms``
before the violation started and ``after_ms[kind]`` after it ended (offline
and parking alarms are dated when they are raised, after their grace time).
Matching is one to one, earliest first: a second alarm for the same violation
(an episode split in two) is a false positive, and so is any alarm nothing
explains. A violation whose alarm was not yet due when the run ended
(``start + due_ms[kind] > end_ms``) is left out of the count, not missed.
A violation that says whether its alarm must end up ``covered`` (by an order
filed after the fact, 补单; or not, for a rejected order) matches only an alarm
in that state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_AFTER_MS", "DEFAULT_DUE_MS", "Raised", "Truth", "match", "order_summary"]

# How long after a violation starts its alarm is due, by kind (the debounce of the
# configuration the scenario writes, plus two report intervals).
DEFAULT_DUE_MS: dict[str, int] = {
    "speeding": 60_000,
    "off_hours": 180_000,
    "out_of_area": 180_000,
    "forbidden_zone": 120_000,
    "parking_violation": 1_800_000 + 180_000,
    "offline": 600_000 + 300_000,
    "terminal_alarm": 60_000,
    "no_order": 25 * 60_000,  # 20 minutes away (or 2 km) without an order, plus reports
    "order_mismatch": 180_000,
}
# How long after a violation ended an alarm may still start and be explained by it.
DEFAULT_AFTER_MS: dict[str, int] = {"parking_violation": 1_900_000, "offline": 900_000}


@dataclass(frozen=True, slots=True)
class Truth:
    kind: str
    vehicle: str
    start_ms: int
    end_ms: int
    covered: bool | None = None  # None: either way


@dataclass(frozen=True, slots=True)
class Raised:
    """An alarm episode FleetWatch raised. ``raised_ms``: when it was seen (simulated time),
    if known; else ``started_at`` stands in."""

    id: str
    kind: str
    vehicle: str
    started_at: int
    raised_ms: int | None = None
    covered: bool = False  # covered by an order when the run ended


@dataclass(slots=True)
class KindScore:
    injected: int = 0
    raised: int = 0
    matched: int = 0
    not_due: int = 0
    missed: list[Truth] = field(default_factory=list)
    unexplained: list[Raised] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        fp = len(self.unexplained)
        d = sorted(self.delays_s)
        return {
            "injected": self.injected,
            "raised": self.raised,
            "matched": self.matched,
            "false_positives": fp,
            "false_negatives": len(self.missed),
            "not_due": self.not_due,
            "precision": round(self.matched / (self.matched + fp), 4) if self.matched + fp else 1.0,
            "recall": (
                round(self.matched / (self.matched + len(self.missed)), 4)
                if self.matched + len(self.missed)
                else 1.0
            ),
            "delay_s_p50": round(d[len(d) // 2], 1) if d else None,
            "delay_s_max": round(d[-1], 1) if d else None,
            "missed": [vars_of(t) for t in self.missed],
            "unexplained": [vars_of(r) for r in self.unexplained],
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def match(
    truth: Iterable[Truth],
    raised: Iterable[Raised],
    *,
    end_ms: int,
    before_ms: int = 60_000,
    after_ms: Mapping[str, int] | None = None,
    due_ms: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Score ``raised`` against ``truth``: per kind and overall precision, recall, delays."""
    after = {**DEFAULT_AFTER_MS, **(after_ms or {})}
    due = {**DEFAULT_DUE_MS, **(due_ms or {})}
    scores: dict[str, KindScore] = {}
    pool: dict[tuple[str, str], list[Raised]] = {}
    for r in sorted(raised, key=lambda r: (r.started_at, r.id)):
        pool.setdefault((r.kind, r.vehicle), []).append(r)
        scores.setdefault(r.kind, KindScore()).raised += 1
    for t in sorted(truth, key=lambda t: (t.start_ms, t.vehicle, t.kind)):
        s = scores.setdefault(t.kind, KindScore())
        lo = t.start_ms - before_ms
        hi = min(t.end_ms, end_ms) + after.get(t.kind, 60_000)
        cands = pool.get((t.kind, t.vehicle), [])
        hit = next(
            (
                r
                for r in cands
                if lo <= r.started_at <= hi and (t.covered is None or r.covered == t.covered)
            ),
            None,
        )
        if hit is None:
            if t.start_ms + due.get(t.kind, 60_000) > end_ms:
                s.not_due += 1
            else:
                s.injected += 1
                s.missed.append(t)
            continue
        s.injected += 1
        cands.remove(hit)
        s.matched += 1
        seen = hit.raised_ms if hit.raised_ms is not None else hit.started_at
        s.delays_s.append((seen - t.start_ms) / 1000.0)
    for (kind, _), rest in pool.items():
        scores[kind].unexplained.extend(rest)
    kinds = {k: scores[k].to_dict() for k in sorted(scores)}
    tp = sum(s.matched for s in scores.values())
    fp = sum(len(s.unexplained) for s in scores.values())
    fn = sum(len(s.missed) for s in scores.values())
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
        "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
        "matched": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "kinds": kinds,
    }


def order_summary(orders: Iterable[Any]) -> dict[str, int]:
    """How many dispatch orders the scenario filed, by what they are: approved in time,
    rejected, late (补单: filed after the trip ended), naming a region."""
    out = {"filed": 0, "approved": 0, "rejected": 0, "late": 0, "with_region": 0}
    for o in orders:
        out["filed"] += 1
        out["rejected" if o.state == "rejected" else "approved"] += 1
        out["late"] += int(o.filed_ms > o.end)
        out["with_region"] += int(o.region is not None)
    return out
