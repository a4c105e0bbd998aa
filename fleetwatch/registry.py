"""The vehicle registry: dense integer indices for vehicles, terminals and organisations.

Every array-shaped stage refers to a vehicle by its dense index (``int32``);
this is the one place that maps indices to ids, plates, terminals and the
organisation tree. Per-vehicle attributes the engine needs on the hot path
(organisation index, configured speed limit) are kept as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fleetwatch.config import Config, OrgConfig, VehicleConfig

__all__ = ["OrgTree", "Registry"]


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
    """Vehicles by dense index. Built once from the configuration."""

    def __init__(
        self,
        vehicles: Iterable[VehicleConfig],
        orgs: OrgTree,
        speeding_default_kmh: float = 80.0,
        limits_by_type: dict[str, float] | None = None,
    ) -> None:
        self.vehicles: tuple[VehicleConfig, ...] = tuple(vehicles)
        self.orgs = orgs
        self.ids = tuple(v.id for v in self.vehicles)
        self.plates = tuple(v.plate for v in self.vehicles)
        self.terminals = tuple(v.terminal for v in self.vehicles)
        self._by_terminal = {t: i for i, t in enumerate(self.terminals)}
        self._by_id = {vid: i for i, vid in enumerate(self.ids)}
        org_pos = {oid: i for i, oid in enumerate(orgs.ids)}
        self.org_index = np.array([org_pos[v.org] for v in self.vehicles], dtype=np.int32)
        by_type = limits_by_type or {}
        self.speed_limit_kmh = np.array(
            [
                v.speed_limit_kmh
                if v.speed_limit_kmh is not None
                else by_type.get(v.type, speeding_default_kmh)
                for v in self.vehicles
            ],
            dtype=np.float32,
        )

    @classmethod
    def from_config(cls, cfg: Config) -> Registry:
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
