"""Sessions: log in (with the login limiter), log out, the duty operator, who am I."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from rules.events import KINDS
from stream.feed import STATES
from web.accounts import HashBusy
from web.api import (
    JSON,
    ApiState,
    audit,
    client_address,
    fail,
    retry_after,
    visible,
)
from web.auth import DUTIES, Principal
from web.bodies import (
    DutyBody,
    LoginBody,
    parse_body,
)
from web.routes import RouteTable

__all__ = ["ROUTES"]

ROUTES = RouteTable()
route = ROUTES.route


# -- session -----------------------------------------------------------------------------------


@route(
    "POST",
    "/api/login",
    None,
    "Log in; returns a session token (sliding expiry, absolute cap). room: a wall screen",
    model=LoginBody,
    limit="login",
    tag="auth",
)
async def login(request: Request, st: ApiState, _: Principal | None) -> Any:
    body = parse_body(LoginBody, await request.body())
    addr = client_address(request)
    now = st.now()
    # counted on arrival, before hashing: a burst of guesses meets the limit too
    wait = st.limiter.admit(body.username, addr, now)
    if wait > 0:
        return JSON({"error": "rate_limited"}, status_code=429, headers=retry_after(wait))
    try:
        p = await st.accounts.check_password(body.username, body.password)
    except HashBusy:
        st.limiter.withdrawn(body.username, addr)
        busy_ms = st.ctx.config.web.auth.busy_retry_after_s * 1000
        return JSON({"error": "busy"}, status_code=503, headers=retry_after(busy_ms))
    if p is None:
        st.limiter.failed(body.username, addr, now)
        raise fail(401, "wrong user name or password")
    st.limiter.succeeded(body.username, addr)
    token, rec = await st.accounts.open_session(p, room=body.room, duty_operator=body.duty_operator)
    await audit(st, p, "login", body.username, room=body.room, duty_operator=body.duty_operator)
    if now - st.purged_at > 60_000:
        st.purged_at = now
        await st.accounts.purge_expired()
    return {
        "token": token,
        "expires_at": rec["expires_at"],
        "absolute_expires_at": rec["absolute_expires_at"],
        "user": {"name": p.name, "org": p.org, "role": p.role},
    }


@route("POST", "/api/logout", "viewer", "End the session used for this call", tag="auth")
async def logout(request: Request, st: ApiState, p: Principal) -> Any:
    if p.token_id:
        await st.accounts.revoke_token(p.token_id, "logout")
    return {"ok": True}


@route(
    "PUT",
    "/api/session/duty",
    "viewer",
    "Name the duty operator (值班员) of this room session (audited)",
    model=DutyBody,
    limit="login",
    tag="auth",
)
async def session_duty(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(DutyBody, await request.body())
    if p.session is None or not p.session.room or p.token_id is None:
        raise fail(409, "not a room session: log in with room = true")
    if not await st.accounts.set_duty_operator(p.token_id, body.duty_operator):
        raise fail(409, "not a room session: log in with room = true")
    await audit(
        st,
        p,
        "session.duty",
        p.token_id,
        before=p.session.duty_operator,
        after=body.duty_operator,
    )
    return {"session": _session_info(p, body.duty_operator)}


def _session_info(p: Principal, duty_operator: str | None = None) -> dict[str, Any] | None:
    s = p.session
    if s is None:
        return None
    return {
        "expires_at": s.expires_at,
        "absolute_expires_at": s.absolute_expires_at,
        "room": s.room,
        "duty_operator": duty_operator if duty_operator is not None else s.duty_operator,
    }


@route("GET", "/api/me", "viewer", "Who the token belongs to, and the page's settings", tag="auth")
async def me(request: Request, st: ApiState, p: Principal) -> Any:
    cfg = st.ctx.config
    reg = st.registry
    orgs = visible(st, p)
    return {
        "user": {
            "name": p.name,
            "username": p.username,
            "org": p.org,
            "role": p.role,
            "duties": [d for d in DUTIES if d in p.duties],
        },
        "session": _session_info(p),
        "service": cfg.service.name,
        "timezone": cfg.service.timezone,
        "orgs": [
            {
                "id": oid,
                "name": reg.orgs.names[i],
                "parent": reg.orgs.ids[reg.orgs.parent[i]] if reg.orgs.parent[i] >= 0 else None,
            }
            for i, oid in enumerate(reg.orgs.ids)
            if oid in orgs
        ],
        "tiles": [t.model_dump() for t in cfg.web.tiles],
        "center": list(cfg.web.center),
        "zoom": cfg.web.zoom,
        "language": cfg.web.language,
        "kinds": list(KINDS),
        "states": list(STATES),
        "feed_interval_ms": cfg.web.feed_interval_ms,
    }
