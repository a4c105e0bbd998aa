"""Command routes: reach a vehicle's terminal through the gateway (JT/T 808 downlink).

::

    POST /api/vehicles/{id}/commands   {"kind": ..., ...}  → 202 {"id", "state": "queued", ...}
    GET  /api/commands/{id}            the command, its state and the terminal's answer
    GET  /api/vehicles/{id}/commands   the vehicle's commands, newest first
    POST /api/commands/{id}/confirm    a second operator confirms a cut of oil/power

Kinds and their fields (all optional unless marked; ``expires_in_s`` for every kind):

- ``text``: ``text`` (required), ``emergency``, ``display`` (default true), ``tts``
  → 0x8300 (JT/T 808-2019 table 38 flags)
- ``confirm_alarm``: ``alarm_id`` (a terminal alarm episode: its bit is confirmed),
  ``alarms`` (names, e.g. ``["emergency"]``), ``alarm_serial`` → 0x8203; default SOS
- ``locate`` → 0x8201, answered by 0x0201 (the reply carries the position)
- ``track``: ``interval_s`` (default 5), ``duration_s`` (default 600) → 0x8202
- ``params_set``: ``params`` ``{"speed_limit_kmh": 80, ...}`` (names or ``0xNNNN``) → 0x8103
- ``params_get``: ``params`` (names; none: all) → 0x8106 / 0x8104, answered by 0x0104
- ``control``: ``action`` ``reset`` | ``cut`` | ``restore`` → 0x8105; ``cut`` and
  ``restore`` only with ``commands.allow_cut``, then wait for a second operator

The command is stored (:class:`store.commands.CommandStore`) and the
:class:`CommandBridge` publishes it on ``{prefix}/{phone}/down`` (QoS 1) to the
gateway node holding the terminal; the gateway's states come back on
``{prefix}/{phone}/cmd-result`` and move the stored command along the transition
table of :mod:`ingest.jt808.commands`. Operators only, scoped to their
organisation subtree, every step audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import Any

import aiomqtt
from starlette.exceptions import HTTPException
from starlette.requests import Request

from fleet import aio
from fleet.errors import BadRecord
from ingest.jt808.bits import ALARM_BITS_2019
from ingest.jt808.commands import FINAL, KINDS, from_wire, to_wire
from ingest.jt808.config import CommandsConfig
from ingest.jt808.downlink import (
    CONFIRMABLE_ALARMS,
    CONTROL_RESET,
    PARAMETER_IDS,
    PARAMETERS,
    TEXT_DISPLAY,
    TEXT_EMERGENCY,
    TEXT_TTS,
    AlarmConfirm,
    Downlink,
    LocateQuery,
    ParamsQuery,
    ParamsSet,
    TemporaryTracking,
    TerminalControl,
    TextMessage,
    parameter_value,
)
from ingest.jt808.session import canonical_phone
from store.commands import CommandStore
from web.api import JSON, ApiState, audit, body_json, fail, vehicle_index
from web.auth import Principal
from web.routes import RouteTable

__all__ = ["CommandBridge", "command_from_request", "confirm_on_ack", "new_command", "run_bridge"]

ROUTES = RouteTable()
route = ROUTES.route

log = logging.getLogger(__name__)

_ALARM_BITS = {name: bit for bit, name in ALARM_BITS_2019.items()}
_ALARM_BITS["sos"] = 0  # the rules' name of the emergency bit (JT/T 808-2019 table 24 bit 0)

_COMMAND_BODY = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "text": {"type": "string"},
        "emergency": {"type": "boolean"},
        "display": {"type": "boolean"},
        "tts": {"type": "boolean"},
        "alarm_id": {"type": "string"},
        "alarms": {"type": "array", "items": {"type": "string"}},
        "interval_s": {"type": "integer"},
        "duration_s": {"type": "integer"},
        "params": {"type": "object"},
        "action": {"type": "string", "enum": ["reset", "cut", "restore"]},
        "expires_in_s": {"type": "integer"},
    },
}


def _int(data: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise fail(400, f"{key} must be an integer within {lo}..{hi}")
    return v


def _param_id(name: str) -> int:
    if name in PARAMETER_IDS:
        return PARAMETER_IDS[name]
    try:
        pid = int(name, 16) if name.lower().startswith("0x") else -1
    except ValueError:
        pid = -1
    if pid not in PARAMETERS:
        known = ", ".join(sorted(PARAMETER_IDS))
        raise fail(400, f"unknown parameter {name!r}; known: {known}")
    return pid


def _alarm_bits(data: dict[str, Any]) -> int:
    names: list[str] = []
    alarm_id = data.get("alarm_id")
    if isinstance(alarm_id, str) and ":terminal_alarm" in alarm_id:
        # v00007:terminal_alarm.sos:1764034200000 (or the old form with "/")
        sub = alarm_id.split(":")[1].replace("/", ".")
        names.append(sub.split(".", 1)[1] if "." in sub else "emergency")
    raw = data.get("alarms")
    if raw is not None:
        if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
            raise fail(400, "alarms must be a list of alarm names")
        names.extend(raw)
    bits = 0
    for n in names or ["emergency"]:
        bit = _ALARM_BITS.get(n)
        if bit is None or not (1 << bit) & CONFIRMABLE_ALARMS:
            raise fail(400, f"alarm {n!r} cannot be confirmed by hand (JT/T 808-2019 table 50)")
        bits |= 1 << bit
    return bits


def command_from_request(
    kind: str, data: dict[str, Any], cfg: CommandsConfig
) -> tuple[Downlink, bool]:
    """The downlink message a request asks for, and whether a second operator must
    confirm it. Raises HTTP 400 (403 for a cut not allowed) with the reason."""
    if kind == "text":
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise fail(400, "text is required")
        if len(text) > cfg.text_max_chars:
            raise fail(400, f"text is longer than {cfg.text_max_chars} characters")
        try:
            text.encode("gbk")
        except UnicodeEncodeError:
            raise fail(400, "text has characters a terminal cannot show (not in GBK)") from None
        flags = (
            (TEXT_EMERGENCY if data.get("emergency") else 0)
            | (TEXT_DISPLAY if data.get("display", True) else 0)
            | (TEXT_TTS if data.get("tts") else 0)
        )
        return TextMessage(text, flags), False
    if kind == "confirm_alarm":
        return AlarmConfirm(_alarm_bits(data), _int(data, "alarm_serial", 0, 0, 0xFFFF)), False
    if kind == "locate":
        return LocateQuery(), False
    if kind == "track":
        interval = _int(data, "interval_s", 5, 1, 3600)
        duration = _int(data, "duration_s", 600, interval, 86_400)
        return TemporaryTracking(interval, duration), False
    if kind == "params_set":
        params = data.get("params")
        if not isinstance(params, dict) or not params:
            raise fail(400, 'params must be an object such as {"speed_limit_kmh": 80}')
        items: list[tuple[int, int | str | bytes]] = []
        for name, value in params.items():
            pid = _param_id(str(name))
            try:
                parameter_value(pid, value)
            except Exception as exc:
                raise fail(400, f"{name}: {exc}") from None
            items.append((pid, value))
        return ParamsSet(tuple(items)), False
    if kind == "params_get":
        names = data.get("params") or []
        if not isinstance(names, list):
            raise fail(400, "params must be a list of parameter names")
        return ParamsQuery(tuple(_param_id(str(n)) for n in names)), False
    if kind == "control":
        action = data.get("action")
        if action == "reset":
            return TerminalControl(CONTROL_RESET), False
        if action in ("cut", "restore"):
            if not cfg.allow_cut:
                raise fail(403, "cutting oil/power is not enabled (commands.allow_cut)")
            word = cfg.cut_command_word if action == "cut" else cfg.restore_command_word
            return TerminalControl(word), True
        raise fail(400, "control action must be reset, cut or restore")
    raise fail(400, f"kind must be one of {', '.join(KINDS)}")


# -- the bridge to the gateway --------------------------------------------------------------


class CommandBridge:
    """Publishes stored commands to the gateway and applies its results to the store.

    :meth:`run` keeps one MQTT connection (reconnecting with backoff); :meth:`kick`
    says a command is waiting to be published. Commands past their expiry that no
    gateway reported on are marked ``expired`` every ``expire_sweep_s``.
    """

    def __init__(self, st: ApiState, store: CommandStore) -> None:
        self.st = st
        self.store = store
        cfg = st.ctx.config
        self.cfg = cfg.commands
        self.mqtt = cfg.mqtt
        self.prefix = cfg.gateway.topic_prefix
        self._kick = asyncio.Event()
        self.connected = asyncio.Event()
        self.results = 0
        self.published = 0

    def kick(self) -> None:
        self._kick.set()

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with aiomqtt.Client(
                    self.mqtt.host,
                    self.mqtt.port,
                    username=self.mqtt.username,
                    password=self.mqtt.password,
                    identifier=f"fleetwatch-web-cmd-{secrets.token_hex(4)}",
                ) as client:
                    await client.subscribe(f"{self.prefix}/+/cmd-result", qos=1)
                    self.connected.set()
                    backoff = 0.5
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._results(client))
                        tg.create_task(self._publisher(client))
            except* aiomqtt.MqttError as eg:
                log.warning("commands: broker unavailable (%s); retrying", eg.exceptions[0])
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 30.0)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            await self.expire()
            again = None
            if self.cfg.republish_s > 0:
                again = self.st.now() - round(self.cfg.republish_s * 1000)
            for cmd in await self.store.unpublished(again):
                body = {
                    "id": cmd["id"],
                    "command": cmd["command"],
                    "expires_at": cmd["expires_at"],
                }
                await client.publish(
                    f"{self.prefix}/{cmd['phone']}/down",
                    json.dumps(body, ensure_ascii=False),
                    qos=1,
                )
                await self.store.mark_published(cmd["id"], self.st.now())
                self.published += 1
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._kick.wait(), self.cfg.expire_sweep_s)

    async def expire(self) -> None:
        for cid in await self.store.due_to_expire(self.st.now()):
            done = await self.store.apply(cid, "expired", self.st.now(), reason="not delivered")
            if done is not None:
                await self._audit_result(done)

    async def _results(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            try:
                r = json.loads(m.payload if isinstance(m.payload, bytes | str) else b"")
                cid, state = str(r["id"]), str(r["state"])
                at = int(r.get("at") or self.st.now())
            except (ValueError, KeyError, TypeError):
                log.warning("commands: unreadable result on %s", m.topic)
                continue
            done = await self.store.apply(
                cid,
                state,
                at,
                attempts=r.get("attempts"),
                result=r.get("result"),
                reply=r.get("reply"),
                reason=r.get("reason"),
            )
            self.results += 1
            if done is not None and done["state"] in FINAL:
                await self._audit_result(done)

    async def _audit_result(self, cmd: dict[str, Any]) -> None:
        gateway = Principal(name="gateway", org=cmd["org"], role="system")
        await audit(
            self.st,
            gateway,
            f"command.{cmd['state']}",
            cmd["id"],
            vehicle=cmd["vehicle"],
            kind=cmd["kind"],
            result=cmd["result"],
            reason=cmd["reason"],
        )


async def _store(st: ApiState) -> CommandStore:
    store = st.command_store
    if store is None:
        store = CommandStore(st.accounts.database(), st.accounts.run)
        await store.open()
        st.command_store = store
    return store


def bridge_of(st: ApiState) -> CommandBridge | None:
    return st.command_bridge


async def run_bridge(st: ApiState) -> None:
    """The app's background task (started in its lifespan): the bridge to the gateway."""
    if not st.ctx.config.commands.enabled:
        return
    bridge = CommandBridge(st, await _store(st))
    st.command_bridge = bridge
    await bridge.run()


# -- routes -----------------------------------------------------------------------------------


def _public(cmd: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cmd.items() if k not in ("published_at",)}


async def _visible_command(st: ApiState, p: Principal, command_id: str) -> dict[str, Any]:
    cmd = await (await _store(st)).get(command_id)
    if cmd is None:
        raise fail(404, f"no command {command_id!r}")
    vehicle_index(st, p, cmd["vehicle"])  # 404 outside the caller's organisations
    return cmd


@route(
    "POST",
    "/api/vehicles/{id}/commands",
    "operator",
    "Send a command to the vehicle's terminal (JT/T 808 downlink; audited) → 202 queued",
    body=_COMMAND_BODY,
    tag="commands",
    status=202,
)
async def create_command(request: Request, st: ApiState, p: Principal) -> Any:
    cfg = st.ctx.config.commands
    if not cfg.enabled:
        raise fail(403, "commands to terminals are disabled (commands.enabled)")
    vehicle_id = request.path_params["id"]
    vehicle_index(st, p, vehicle_id)
    data = await body_json(request)
    return JSON(await new_command(st, p, vehicle_id, data), status_code=202)


async def new_command(
    st: ApiState, p: Principal, vehicle_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    """Store a command from a request body (checked as the POST route does), audit it and
    wake the bridge; the command as stored. HTTP errors for what does not fit."""
    cfg = st.ctx.config.commands
    i = vehicle_index(st, p, vehicle_id)
    kind = str(data.get("kind", ""))
    msg, second = command_from_request(kind, data, cfg)
    expires_in = _int(data, "expires_in_s", cfg.default_expiry_s, 1, cfg.max_expiry_s)
    store = await _store(st)
    if await store.open_count(vehicle_id) >= cfg.max_open_per_vehicle:
        raise fail(429, f"{cfg.max_open_per_vehicle} commands for this vehicle are not done yet")
    try:
        wire = to_wire(kind, msg)
        from_wire(wire)  # what the gateway will rebuild
    except BadRecord as exc:
        raise fail(400, exc.detail) from None
    now = st.now()
    cmd: dict[str, Any] = {
        "id": f"cmd-{secrets.token_hex(8)}",
        "vehicle": vehicle_id,
        "org": st.registry.org_of(i),
        "phone": canonical_phone(st.registry.terminals[i]),
        "kind": kind,
        "command": wire,
        "state": "awaiting_confirmation" if second else "queued",
        "created_by": p.name,
        "created_at": now,
        "expires_at": now + expires_in * 1000,
        "alarm_id": data.get("alarm_id") if isinstance(data.get("alarm_id"), str) else None,
    }
    await store.add(cmd)
    await audit(st, p, "command.create", cmd["id"], vehicle=vehicle_id, kind=kind, command=wire)
    bridge = bridge_of(st)
    if bridge is not None:
        bridge.kick()
    saved = await store.get(cmd["id"])
    assert saved is not None
    return _public(saved)


async def confirm_on_ack(
    st: ApiState, p: Principal, alarm_id: str, vehicle_id: str
) -> dict[str, Any] | None:
    """With ``commands.confirm_on_ack``: the 0x8203 that goes with acknowledging the
    terminal alarm ``alarm_id`` (its bit, e.g. SOS), or None (off, or not a terminal
    alarm a platform may confirm). For the acknowledgement handler to call."""
    cfg = st.ctx.config.commands
    if not (cfg.enabled and cfg.confirm_on_ack) or ":terminal_alarm" not in alarm_id:
        return None
    try:
        return await new_command(st, p, vehicle_id, {"kind": "confirm_alarm", "alarm_id": alarm_id})
    except HTTPException as exc:  # e.g. a bit the standard does not let a platform confirm
        log.info("no 0x8203 with the acknowledgement of %s: %s", alarm_id, exc.detail)
        return None


@route(
    "GET",
    "/api/commands/{id}",
    "operator",
    "One command: queued | sent | acked | failed | timeout | expired, with the terminal's answer",
    tag="commands",
)
async def get_command(request: Request, st: ApiState, p: Principal) -> Any:
    return _public(await _visible_command(st, p, request.path_params["id"]))


@route(
    "GET",
    "/api/vehicles/{id}/commands",
    "operator",
    "The vehicle's commands, newest first (at most 100)",
    tag="commands",
)
async def vehicle_commands(request: Request, st: ApiState, p: Principal) -> Any:
    vehicle_id = request.path_params["id"]
    vehicle_index(st, p, vehicle_id)
    rows = await (await _store(st)).for_vehicle(vehicle_id)
    return {"commands": [_public(c) for c in rows]}


@route(
    "POST",
    "/api/commands/{id}/confirm",
    "operator",
    "A second operator confirms a command that needs one (cutting oil/power; audited)",
    tag="commands",
)
async def confirm_command(request: Request, st: ApiState, p: Principal) -> Any:
    cmd = await _visible_command(st, p, request.path_params["id"])
    if cmd["state"] != "awaiting_confirmation":
        raise fail(409, f"the command is {cmd['state']}, not awaiting confirmation")
    if cmd["created_by"] == p.name:
        raise fail(403, "a second operator must confirm: not the one who asked")
    done = await (await _store(st)).apply(cmd["id"], "queued", st.now(), by=p.name, event="confirm")
    if done is None:
        raise fail(409, "the command changed meanwhile")
    await audit(st, p, "command.confirm", cmd["id"], vehicle=cmd["vehicle"], kind=cmd["kind"])
    bridge = bridge_of(st)
    if bridge is not None:
        bridge.kick()
    return _public(done)
