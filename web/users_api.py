"""Users, tokens and the audit log of an organisation subtree (admin)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from web.api import (
    ApiState,
    audit,
    fail,
    q_int,
    visible,
)
from web.auth import Principal, role_at_least
from web.bodies import (
    Invalid,
    TokenCreate,
    UserCreate,
    UserPatch,
    parse_body,
)
from web.routes import RouteTable

__all__ = ["ROUTES"]

ROUTES = RouteTable()
route = ROUTES.route


# -- users and tokens --------------------------------------------------------------------------


def _check_grant(st: ApiState, p: Principal, org: str, role: str) -> None:
    if org not in visible(st, p):
        # the same answer for an organisation elsewhere and for none at all
        raise Invalid([{"field": "org", "reason": "no such organisation in your subtree"}])
    if not role_at_least(p.role, role):
        raise fail(403, "you cannot grant a role above your own")


@route("GET", "/api/users", "admin", "Users of your organisation subtree", tag="users")
async def list_users(request: Request, st: ApiState, p: Principal) -> Any:
    return {"users": await st.accounts.users(visible(st, p))}


@route("POST", "/api/users", "admin", "Create a user (audited)", model=UserCreate, tag="users")
async def create_user(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(UserCreate, await request.body())
    _check_grant(st, p, body.org, body.role)
    if not await st.accounts.create_user(
        body.username, body.password, body.org, body.role, duties=body.duties
    ):
        # user names are one name space (they log in without an organisation): this
        # says the name is taken, never where or by whom
        raise fail(409, "user name not available")
    await audit(
        st, p, "user.create", body.username, org=body.org, role=body.role, duties=body.duties
    )
    return await st.accounts.user(body.username)


async def _own_user(st: ApiState, p: Principal, username: str) -> dict[str, Any]:
    u = await st.accounts.user(username)
    if u is None or u["org"] not in visible(st, p):
        raise fail(404, f"no user {username!r}")
    return u


@route(
    "PATCH",
    "/api/users/{username}",
    "admin",
    "Change a user's password, role, organisation, duties or disable it (audited)",
    model=UserPatch,
    tag="users",
)
async def update_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    u = await _own_user(st, p, username)
    body = parse_body(UserPatch, await request.body())
    if not role_at_least(p.role, u["role"]):
        raise fail(403, "you cannot change a user above your own role")
    _check_grant(st, p, body.org or u["org"], body.role or u["role"])
    await st.accounts.update_user(
        username,
        password=body.password,
        role=body.role,
        org=body.org,
        disabled=body.disabled,
        duties=body.duties,
    )
    changed = sorted(body.model_fields_set)
    await audit(st, p, "user.update", username, changed=changed)
    return await st.accounts.user(username)


@route("DELETE", "/api/users/{username}", "admin", "Delete a user (audited)", tag="users")
async def delete_user(request: Request, st: ApiState, p: Principal) -> Any:
    username = request.path_params["username"]
    await _own_user(st, p, username)
    await st.accounts.delete_user(username)
    await audit(st, p, "user.delete", username)
    return {"ok": True}


@route("GET", "/api/tokens", "admin", "Live tokens and sessions (never their secret)", tag="users")
async def list_tokens(request: Request, st: ApiState, p: Principal) -> Any:
    return {"tokens": await st.accounts.tokens(visible(st, p))}


@route(
    "POST",
    "/api/tokens",
    "admin",
    "Issue a machine token; the secret is shown once (audited)",
    tag="users",
    model=TokenCreate,
)
async def create_token(request: Request, st: ApiState, p: Principal) -> Any:
    body = parse_body(TokenCreate, await request.body())
    org = body.org or p.org
    _check_grant(st, p, org, body.role)
    token, rec = await st.accounts.issue_token(
        Principal(name=body.name, org=org, role=body.role), body.ttl_s, body.name
    )
    await audit(st, p, "token.create", rec["id"], name=body.name, org=org, role=body.role)
    return {"token": token, **rec}


@route("DELETE", "/api/tokens/{id}", "admin", "Revoke a token or session (audited)", tag="users")
async def revoke_token(request: Request, st: ApiState, p: Principal) -> Any:
    tid = request.path_params["id"]
    org = await st.accounts.token_org(tid)
    if org is None or org not in visible(st, p):
        raise fail(404, "no such token")
    await st.accounts.revoke_token(tid)
    await audit(st, p, "token.revoke", tid)
    return {"ok": True}


@route(
    "GET",
    "/api/audit",
    "admin",
    "The audit log of operator actions, newest first",
    params=(
        ("from", "integer", "epoch ms"),
        ("to", "integer", "epoch ms"),
        ("action", {"type": "string", "maxLength": 64}, "e.g. alarm.ack"),
        ("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "at most (default 500)"),
    ),
    tag="users",
)
async def audit_log(request: Request, st: ApiState, p: Principal) -> Any:
    return {
        "entries": await st.accounts.audit_log(
            visible(st, p),
            from_ms=q_int(request, "from"),
            to_ms=q_int(request, "to"),
            action=request.query_params.get("action") or None,
            limit=max(1, min(q_int(request, "limit", 500) or 500, 5000)),
        )
    }
