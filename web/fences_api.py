"""Fence routes: list, create, change and delete fences, GeoJSON in and out.

A fence travels as a GeoJSON Feature whose geometry is its (outline) polygon in
WGS-84 and whose properties are ``id, name, use, org, speed_limit_kmh, shape``
plus ``center, radius_m`` (circle) or ``path, half_width_m`` (corridor). Import
with ``?datum=gcj02`` converts AMap/DataV coordinates to WGS-84 first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from starlette.exceptions import HTTPException
from starlette.requests import Request

from fleet.errors import FleetWatchError
from web.api import ApiState, body_json, broadcast, fail, need, visible
from web.auth import Principal
from web.routes import RouteTable

__all__ = ["fence_from_feature", "fence_to_feature", "restore_fences"]

ROUTES = RouteTable()
route = ROUTES.route

log = logging.getLogger(__name__)

_FEATURE = {"type": "object", "description": "a GeoJSON Feature or FeatureCollection"}


def fence_to_feature(f: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "id": f.id,
        "name": f.name,
        "use": f.use,
        "org": f.org,
        "speed_limit_kmh": f.speed_limit_kmh,
        "shape": f.shape,
    }
    if f.shape == "circle":
        props.update(center=list(f.center), radius_m=f.radius_m)
    elif f.shape == "corridor":
        props.update(path=[list(p) for p in f.path or ()], half_width_m=f.half_width_m)
    return {"type": "Feature", "id": f.id, "properties": props, "geometry": mapping(f.geometry)}


def _gcj_to_wgs(geom: Any) -> Any:
    from geofence.datum import gcj02_to_wgs84

    def conv(xy: Any) -> Any:
        x, y = gcj02_to_wgs84(xy[:, 0], xy[:, 1])
        xy = xy.copy()
        xy[:, 0], xy[:, 1] = x, y
        return xy

    return shapely.transform(geom, conv)


def fence_from_feature(feat: dict[str, Any], default_org: str, datum: str = "wgs84") -> Any:
    """Build a Fence from a Feature. Raises HTTP 400 with the reason on bad input."""
    from geofence.fence import Fence

    if not isinstance(feat, dict) or feat.get("type") != "Feature":
        raise fail(400, "expected a GeoJSON Feature")
    props = feat.get("properties") or {}
    fid = props.get("id") or feat.get("id") or props.get("adcode")
    if fid is None or not str(fid):
        raise fail(400, "a fence needs properties.id")
    fid = str(fid)
    name = str(props.get("name") or fid)
    org = str(props.get("org") or default_org)
    use = props.get("use", "forbidden")
    limit = props.get("speed_limit_kmh")
    kind = props.get("shape", "polygon")
    try:
        if kind == "circle":
            center = props.get("center")
            if center is None and (feat.get("geometry") or {}).get("type") == "Point":
                center = feat["geometry"]["coordinates"]
            lon, lat = float(center[0]), float(center[1])  # type: ignore[index]
            if datum == "gcj02":
                from geofence.datum import gcj02_to_wgs84

                x, y = gcj02_to_wgs84([lon], [lat])
                lon, lat = float(x[0]), float(y[0])
            return Fence.circle(
                id=fid,
                name=name,
                org=org,
                use=use,
                center=(lon, lat),
                radius_m=float(props["radius_m"]),
                speed_limit_kmh=limit,
            )
        if kind == "corridor":
            path = [(float(p[0]), float(p[1])) for p in props["path"]]
            return Fence.corridor(
                id=fid,
                name=name,
                org=org,
                use=use,
                path=path,
                half_width_m=float(props["half_width_m"]),
                speed_limit_kmh=limit,
            )
        geom = shape(feat.get("geometry") or {})
        if datum == "gcj02":
            geom = _gcj_to_wgs(geom)
        if not isinstance(geom, Polygon | MultiPolygon):
            raise fail(400, f"fence {fid}: geometry must be a Polygon or MultiPolygon")
        return Fence.polygon(
            id=fid, name=name, org=org, use=use, geometry=geom, speed_limit_kmh=limit
        )
    except (KeyError, TypeError, ValueError, IndexError, shapely.errors.ShapelyError) as exc:
        raise fail(400, f"fence {fid}: {exc}") from None
    except FleetWatchError as exc:
        raise fail(400, str(exc)) from None


def scoped_fence_id(org: str, fid: str) -> str:
    """The id of a fence made by an administrator below the top of the tree.

    Such an id lives in the administrator's own name space (``wusheng.ktv``), so a
    409 can only be about a fence the administrator sees: whether another county
    has a ``ktv`` never changes the answer. The city-wide administrator sees every
    fence and keeps plain ids.
    """
    prefix = f"{org}."
    return fid if fid.startswith(prefix) else prefix + fid


def _features(data: dict[str, Any]) -> list[dict[str, Any]]:
    if data.get("type") == "FeatureCollection":
        feats = data.get("features")
        if not isinstance(feats, list):
            raise fail(400, "FeatureCollection without features")
        return feats
    return [data]


@route(
    "GET", "/api/fences", "viewer", "Fences of your organisation subtree as GeoJSON", tag="fences"
)
async def list_fences(request: Request, st: ApiState, p: Principal) -> Any:
    fences = need(st.ctx.fences, "fences")
    orgs = visible(st, p)
    return {
        "type": "FeatureCollection",
        "features": [fence_to_feature(f) for f in fences.index.fences if f.org in orgs],
    }


@route(
    "POST",
    "/api/fences",
    "admin",
    "Create fences from a GeoJSON Feature or FeatureCollection (audited)",
    body=_FEATURE,
    params=(("datum", "string", "wgs84 (default) or gcj02"),),
    tag="fences",
)
async def create_fences(request: Request, st: ApiState, p: Principal) -> Any:
    fences = need(st.ctx.fences, "fences")
    datum = request.query_params.get("datum", "wgs84")
    if datum not in ("wgs84", "gcj02"):
        raise fail(400, "datum must be wgs84 or gcj02")
    made = [fence_from_feature(f, p.org, datum) for f in _features(await body_json(request))]
    orgs = visible(st, p)
    if orgs != frozenset(st.registry.orgs.ids):
        made = [dataclasses.replace(f, id=scoped_fence_id(p.org, f.id)) for f in made]
    existing = set(fences.index.ids)
    for f in made:
        if f.org not in orgs:
            raise fail(403, f"fence {f.id}: organisation {f.org!r} is outside yours")
        if f.id in existing:
            raise fail(409, f"fence {f.id!r} exists; use PUT to change it")
        existing.add(f.id)

    def apply() -> None:
        fences.replace_all([*fences.index.fences, *made])

    await st.records.put_fences([fence_to_feature(f) for f in made], p.name, st.now())
    await asyncio.to_thread(apply)
    await broadcast(st, "fences")
    await st.accounts.audit(
        p, "fence.create", ",".join(f.id for f in made), {"names": [f.name for f in made]}
    )
    return {"type": "FeatureCollection", "features": [fence_to_feature(f) for f in made]}


def _own_fence(st: ApiState, p: Principal, fid: str) -> Any:
    fences = need(st.ctx.fences, "fences")
    f = next((f for f in fences.index.fences if f.id == fid), None)
    if f is None or f.org not in visible(st, p):
        raise fail(404, f"no fence {fid!r}")
    return f


@route("GET", "/api/fences/{id}", "viewer", "One fence as a GeoJSON Feature", tag="fences")
async def get_fence(request: Request, st: ApiState, p: Principal) -> Any:
    return fence_to_feature(_own_fence(st, p, request.path_params["id"]))


@route(
    "PUT",
    "/api/fences/{id}",
    "admin",
    "Replace a fence (audited)",
    body=_FEATURE,
    params=(("datum", "string", "wgs84 (default) or gcj02"),),
    tag="fences",
)
async def replace_fence(request: Request, st: ApiState, p: Principal) -> Any:
    fid = request.path_params["id"]
    old = _own_fence(st, p, fid)
    data = await body_json(request)
    data.setdefault("properties", {})["id"] = fid
    f = fence_from_feature(data, old.org, request.query_params.get("datum", "wgs84"))
    if f.org not in visible(st, p):
        raise fail(403, f"organisation {f.org!r} is outside yours")
    await st.records.put_fences([fence_to_feature(f)], p.name, st.now())
    await asyncio.to_thread(need(st.ctx.fences, "fences").replace, f)
    await broadcast(st, "fences")
    await st.accounts.audit(p, "fence.update", fid, {"name": f.name})
    return fence_to_feature(f)


@route("DELETE", "/api/fences/{id}", "admin", "Delete a fence (audited)", tag="fences")
async def delete_fence(request: Request, st: ApiState, p: Principal) -> Any:
    fid = request.path_params["id"]
    f = _own_fence(st, p, fid)
    await st.records.delete_fence(fid, p.name, st.now())
    await asyncio.to_thread(need(st.ctx.fences, "fences").delete, fid)
    await broadcast(st, "fences")
    await st.accounts.audit(p, "fence.delete", fid, {"name": f.name})
    return {"ok": True}


async def restore_fences(st: ApiState) -> int:
    """Lay the fence changes stored by this API over the configuration's fences (start-up).

    Returns how many stored changes were applied; a stored fence that no longer
    builds (e.g. its organisation left the configuration) is logged and skipped.
    """
    from web.records import apply_fence_changes

    fences = st.ctx.fences
    if fences is None:
        return 0
    changes = await st.records.fence_changes()
    if not changes:
        return 0
    orgs = set(st.registry.orgs.ids)
    default_org = st.registry.orgs.ids[0]

    def rebuild() -> int:
        good: list[tuple[str, Any]] = []
        for ch in changes:
            f = None
            if ch.feature is not None:
                try:
                    f = fence_from_feature(ch.feature, default_org)
                except HTTPException as exc:
                    log.error("stored fence %s not applied: %s", ch.fence_id, exc.detail)
                    continue
                if f.org not in orgs:
                    log.error("stored fence %s not applied: no organisation %r", ch.fence_id, f.org)
                    continue
            good.append((ch.fence_id, f))
        fences.replace_all(apply_fence_changes(fences.index.fences, good))
        return len(good)

    return await asyncio.to_thread(rebuild)
