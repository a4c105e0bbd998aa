"""The vehicle registry: dense integer indices for vehicles, terminals and organisations.

Every array-shaped stage refers to a vehicle by its dense index (``int32``);
this is the one place that maps indices to ids, plates, terminals and the
organisation tree. Per-vehicle attributes the engine needs on the hot path
(organisation index, configured speed limit) are kept as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fleet.model import OrgConfig, VehicleConfig

__all__ = ["OrgTree", "Registry", "RegistrySource", "grown"]

_EXPECTED = frozenset({"在用", "封存"})  # store.records_core.EXPECTED


class _SpeedingSource(Protocol):
    @property
    def default_limit_kmh(self) -> float: ...
    @property
    def limits_by_type(self) -> dict[str, float]: ...


class _RulesSource(Protocol):
    @property
    def speeding(self) -> _SpeedingSource: ...


class RegistrySource(Protocol):
    """What :meth:`Registry.from_config` reads: the kernel never imports the configuration
    (``fleetwatch.config.Config`` has this shape)."""

    @property
    def vehicles(self) -> Sequence[VehicleConfig]: ...
    @property
    def orgs(self) -> Sequence[OrgConfig]: ...
    @property
    def rules(self) -> _RulesSource: ...


def _carries_terminal(v: VehicleConfig) -> bool:
    """A disposed car's terminal is free to be fitted to another one."""
    return v.status != "已处置"


def grown(a: npt.NDArray[Any], n: int, fill: Any) -> npt.NDArray[Any]:
    """``a`` extended to length ``n`` with ``fill`` (itself when long enough)."""
    if a.shape[0] >= n:
        return a
    out = np.full((n, *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


@dataclass(frozen=True)
class OrgTree:
    """Organisations as a tree (city → district/county → unit)."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    parent: npt.NDArray[np.int32]  # -1 at a root

    @classmethod
    def from_config(cls, orgs: Sequence[OrgConfig]) -> OrgTree:
        ids = tuple(o.id for o in orgs)
        pos = {oid: i for i, oid in enumerate(ids)}
        parent = np.array([pos[o.parent] if o.parent else -1 for o in orgs], dtype=np.int32)
        return cls(ids, tuple(o.name for o in orgs), parent)

    def index(self, org_id: str) -> int:
        return self.ids.index(org_id)

    def subtree(self, org_id: str) -> frozenset[str]:
        """``org_id`` and every organisation below it."""
        root = self.index(org_id)
        out = {root}
        changed = True
        while changed:
            changed = False
            for i, p in enumerate(self.parent.tolist()):
                if p in out and i not in out:
                    out.add(i)
                    changed = True
        return frozenset(self.ids[i] for i in out)

    def subtree_mask(self, org_id: str) -> npt.NDArray[np.bool_]:
        members = self.subtree(org_id)
        return np.array([oid in members for oid in self.ids], dtype=bool)


class Registry:
    """Vehicles by dense index, built from the records and changed live.

    A vehicle keeps its index for the life of the process: :meth:`upsert` changes
    a known vehicle in place and appends a new one, and nothing is ever removed (a
    disposed vehicle keeps its index, its history and its episodes). ``version``
    grows with every change; every stage that sizes arrays by the registry
    compares it with the version it last saw, and grows or re-derives what it
    keeps (``RulesEngine``, ``FeedCore``, ``RelayOut``, the history and live
    stores, ingest's topic memo) before it uses a new index.
    """

    def __init__(
        self,
        vehicles: Iterable[VehicleConfig],
        orgs: OrgTree,
        speeding_default_kmh: float = 80.0,
        limits_by_type: dict[str, float] | None = None,
    ) -> None:
        self.vehicles: list[VehicleConfig] = list(vehicles)
        self.orgs = orgs
        self.version = 0
        self._log: list[tuple[int, int]] = []  # (version, index) of recent changes
        self._default_kmh = speeding_default_kmh
        self._by_type = dict(limits_by_type or {})
        self._org_pos = {oid: i for i, oid in enumerate(orgs.ids)}
        self.ids: list[str] = [v.id for v in self.vehicles]
        self.plates: list[str] = [v.plate for v in self.vehicles]
        self.terminals: list[str] = [v.terminal for v in self.vehicles]
        self._by_id = {vid: i for i, vid in enumerate(self.ids)}
        if len(self._by_id) != len(self.ids):
            raise ValueError("vehicle ids must be unique")
        self._by_terminal: dict[str, int] = {}
        for i, v in enumerate(self.vehicles):
            if _carries_terminal(v):
                self._by_terminal[v.terminal] = i
        self.org_index = np.array([self._org_pos[v.org] for v in self.vehicles], dtype=np.int32)
        self.speed_limit_kmh = np.array([self._limit(v) for v in self.vehicles], dtype=np.float32)
        #: 封存: any movement is a critical alarm (rules ``sealed_moving``)
        self.sealed = np.array([v.status == "封存" for v in self.vehicles], dtype=bool)
        #: expected to report (在用, 封存): the offline rule applies
        self.expected = np.array([v.status in _EXPECTED for v in self.vehicles], dtype=bool)

    def _limit(self, v: VehicleConfig) -> float:
        if v.speed_limit_kmh is not None:
            return float(v.speed_limit_kmh)
        return float(self._by_type.get(v.type, self._default_kmh))

    def upsert(self, v: VehicleConfig) -> int:
        """Add ``v`` or change the vehicle with its id; returns its index.

        Raises ``ValueError`` for an unknown organisation, or a terminal another
        vehicle in service carries (the records check this first; this is the last guard).
        """
        org = self._org_pos.get(v.org)
        if org is None:
            raise ValueError(f"unknown organisation {v.org!r}")
        holder = self._by_terminal.get(v.terminal)
        i = self._by_id.get(v.id)
        if _carries_terminal(v) and holder is not None and holder != i:
            raise ValueError(f"terminal {v.terminal} is carried by {self.ids[holder]}")
        if i is None:
            i = len(self.vehicles)
            self.vehicles.append(v)
            self.ids.append(v.id)
            self.plates.append(v.plate)
            self.terminals.append(v.terminal)
            self._by_id[v.id] = i
            self.org_index = np.append(self.org_index, np.int32(org))
            self.speed_limit_kmh = np.append(self.speed_limit_kmh, np.float32(self._limit(v)))
            self.sealed = np.append(self.sealed, v.status == "封存")
            self.expected = np.append(self.expected, v.status in _EXPECTED)
        else:
            old = self.vehicles[i]
            if self._by_terminal.get(old.terminal) == i:
                del self._by_terminal[old.terminal]
            self.vehicles[i] = v
            self.plates[i] = v.plate
            self.terminals[i] = v.terminal
            self.org_index[i] = org
            self.speed_limit_kmh[i] = self._limit(v)
            self.sealed[i] = v.status == "封存"
            self.expected[i] = v.status in _EXPECTED
        if _carries_terminal(v):
            self._by_terminal[v.terminal] = i
        self._bump([i])
        return i

    _LOG_MAX = 10_000  # changes remembered for changed_since; older asks get None

    def _bump(self, indices: list[int]) -> None:
        self.version += 1
        self._log += [(self.version, i) for i in indices]
        if len(self._log) > self._LOG_MAX:
            del self._log[: len(self._log) - self._LOG_MAX]

    def changed_since(self, version: int) -> list[int] | None:
        """Indices changed or added after ``version``; None when that is too far back to
        know (derive everything again)."""
        if version == self.version:
            return []
        if not self._log or self._log[0][0] > version + 1:
            return None
        return sorted({i for ver, i in self._log if ver > version})

    def upsert_many(self, vs: Iterable[VehicleConfig]) -> list[int]:
        """:meth:`upsert` of many (start-up: the records on file); new vehicles are appended
        with one concatenation per array, so loading 100,000 stays linear."""
        out: list[int] = []
        fresh: list[VehicleConfig] = []
        fresh_idx: list[int] = []
        for v in vs:
            if v.id in self._by_id:
                out.append(self.upsert(v))
            else:
                if v.org not in self._org_pos:
                    raise ValueError(f"unknown organisation {v.org!r}")
                holder = self._by_terminal.get(v.terminal)
                if _carries_terminal(v) and holder is not None:
                    raise ValueError(f"terminal {v.terminal} is carried by {self.ids[holder]}")
                i = len(self.vehicles)
                self.vehicles.append(v)
                self.ids.append(v.id)
                self.plates.append(v.plate)
                self.terminals.append(v.terminal)
                self._by_id[v.id] = i
                if _carries_terminal(v):
                    self._by_terminal[v.terminal] = i
                fresh.append(v)
                fresh_idx.append(i)
                out.append(i)
        if fresh:
            self.org_index = np.concatenate(
                [self.org_index, np.array([self._org_pos[v.org] for v in fresh], np.int32)]
            )
            self.speed_limit_kmh = np.concatenate(
                [self.speed_limit_kmh, np.array([self._limit(v) for v in fresh], np.float32)]
            )
            self.sealed = np.concatenate(
                [self.sealed, np.array([v.status == "封存" for v in fresh], bool)]
            )
            self.expected = np.concatenate(
                [self.expected, np.array([v.status in _EXPECTED for v in fresh], bool)]
            )
            # Too many to remember one by one: an empty log makes changed_since answer None.
            if len(fresh_idx) <= self._LOG_MAX:
                self._bump(fresh_idx)
            else:
                self._log.clear()
                self.version += 1
        return out

    @classmethod
    def from_config(cls, cfg: RegistrySource) -> Registry:
        """From the configuration (``fleetwatch.config.Config``, or anything shaped like it)."""
        sp = cfg.rules.speeding
        return cls(
            cfg.vehicles,
            OrgTree.from_config(cfg.orgs),
            sp.default_limit_kmh,
            dict(sp.limits_by_type),
        )

    def __len__(self) -> int:
        return len(self.vehicles)

    def by_terminal(self, terminal: str) -> int | None:
        """Dense index of the vehicle carrying ``terminal``, or None if unknown.

        JT/T 808 phone numbers are BCD with leading zeros; a terminal registered
        as ``13800138000`` is also found as ``013800138000``.
        """
        i = self._by_terminal.get(terminal)
        if i is None and terminal.startswith("0"):
            i = self._by_terminal.get(terminal.lstrip("0"))
        return i

    def by_id(self, vehicle_id: str) -> int | None:
        return self._by_id.get(vehicle_id)

    def org_of(self, vehicle: int) -> str:
        return self.orgs.ids[int(self.org_index[vehicle])]

    def visible_mask(self, org_id: str) -> npt.NDArray[np.bool_]:
        """Vehicles that a user of ``org_id`` may see (its subtree)."""
        return self.orgs.subtree_mask(org_id)[self.org_index]
