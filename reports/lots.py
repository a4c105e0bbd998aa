"""Whether a point lies in its vehicle's own lot (停车场), from the fence index alone.

The rollup counts time outside the lot. This is the lot part of the rules engine's fence
facts (a ``lot`` fence of the vehicle's own organisation) computed straight from
:class:`geofence.index.FenceIndex`, so that the reports — read by the web — never reach
the engine's internals (the import-linter contracts). ``tests/reports/test_lots.py``
checks that it agrees with the engine on random points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fleet.registry import Registry
from geofence.index import USE_CODES

__all__ = ["in_own_lot", "in_own_lot_scalar"]


def _lot_org(index: Any, registry: Registry) -> npt.NDArray[np.int32]:
    """Per fence: the registry's index of the organisation whose lot it is, else -1."""
    org_pos = {o: i for i, o in enumerate(registry.orgs.ids)}
    f_org = np.array(
        [org_pos.get(index.org_names[o], -1) for o in np.asarray(index.org).tolist()],
        dtype=np.int32,
    ).reshape(-1)
    use = np.asarray(index.use, dtype=np.int8).reshape(-1)
    return np.where((use == USE_CODES["lot"]) & (f_org >= 0), f_org, -1).astype(np.int32)


def in_own_lot(
    index: Any,
    registry: Registry,
    veh: npt.NDArray[Any],
    lon: npt.NDArray[Any],
    lat: npt.NDArray[Any],
) -> npt.NDArray[np.bool_]:
    """True where point ``k`` (vehicle index ``veh[k]``) is inside a lot of its vehicle's
    organisation, or that organisation has no lot at all (nothing to be outside of)."""
    n = int(np.asarray(veh).shape[0])
    if index is None or n == 0:
        return np.ones(n, dtype=bool)
    veh = np.asarray(veh, dtype=np.int64)
    lot_org = _lot_org(index, registry)
    has_lot_org = np.zeros(len(registry.orgs.ids), dtype=bool)
    has_lot_org[lot_org[lot_org >= 0]] = True
    org_of_point = np.asarray(registry.org_index)[veh]
    inside = np.zeros(n, dtype=bool)
    if lot_org.size and (lot_org >= 0).any():
        p, f = index.membership(lon, lat)
        if p.size:
            ok = lot_org[f] == org_of_point[p]
            inside[p[ok]] = True
    return np.asarray(inside | ~has_lot_org[org_of_point], dtype=bool)


def in_own_lot_scalar(index: Any, registry: Registry, v: int, lon: float, lat: float) -> bool:
    """One point, fence by fence (the twin of :func:`in_own_lot`)."""
    if index is None:
        return True
    lot_org = _lot_org(index, registry).tolist()
    org = int(registry.org_index[v])
    if org not in lot_org:
        return True
    _, fences = index.membership(np.array([lon]), np.array([lat]))
    return any(lot_org[int(f)] == org for f in fences.tolist())
