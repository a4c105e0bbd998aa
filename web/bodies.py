"""Request bodies of the session, user and token routes, validated against typed models.

Strict: a JSON ``"no"`` is not a boolean, ``""`` not an organisation, an unknown key
is an error. :func:`parse_body` turns a violation into :class:`Invalid`, which the
route machinery answers ``422 {"error": "invalid", "fields": [{"field", "reason"}]}``.
The same models give the OpenAPI document its schemas (enums, lengths).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic import model_validator as _model_validator

from fleetwatch.errors import BadRecord

__all__ = [
    "DutyBody",
    "Invalid",
    "LoginBody",
    "TokenCreate",
    "UserCreate",
    "UserPatch",
    "parse_body",
]

M = TypeVar("M", bound=BaseModel)

Role = Literal["viewer", "operator", "admin"]
Duty = Literal["requester", "approver", "dispatcher"]  # web.auth.DUTIES
# A user name is a login name: no spaces, no slashes (it is a path segment).
UserName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s/\\]+$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]
OrgId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
PersonName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True, pattern=r"\S")
]


class Invalid(BadRecord):
    """A request body that breaks its model; ``fields`` lists ``{"field", "reason"}``."""

    def __init__(self, fields: list[dict[str, str]]) -> None:
        super().__init__("invalid", "; ".join(f"{f['field']}: {f['reason']}" for f in fields))
        self.fields = fields


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class LoginBody(_Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    room: bool = Field(default=False, description="a monitoring-room wall screen (值班大屏)")
    duty_operator: PersonName | None = Field(
        default=None, description="the named duty operator (值班员); required with room"
    )

    @_model_validator(mode="after")
    def _room_has_operator(self) -> LoginBody:
        if self.room and self.duty_operator is None:
            raise ValueError("a room session needs duty_operator")
        if not self.room and self.duty_operator is not None:
            raise ValueError("duty_operator belongs to a room session (room: true)")
        return self


class DutyBody(_Body):
    duty_operator: PersonName


class UserCreate(_Body):
    username: UserName
    password: Password
    org: OrgId
    role: Role
    duties: list[Duty] = Field(default_factory=list)


class UserPatch(_Body):
    password: Password | None = None
    role: Role | None = None
    org: OrgId | None = None
    disabled: bool | None = None
    duties: list[Duty] | None = None


class TokenCreate(_Body):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    org: OrgId | None = None
    role: Role = "viewer"
    ttl_s: int = Field(default=90 * 86_400, ge=60, le=3 * 365 * 86_400)


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` (a JSON object) as ``model``, or :class:`Invalid` naming each bad field."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise Invalid([_field(e) for e in exc.errors(include_url=False)]) from None


def _field(e: Any) -> dict[str, str]:
    loc = [str(x) for x in e.get("loc", ())]
    reason = str(e.get("msg", "invalid"))
    if e.get("type") == "json_invalid":
        return {"field": "body", "reason": "body is not JSON"}
    if e.get("type") == "model_type" or not loc:
        return {"field": "body", "reason": reason}
    return {"field": ".".join(loc), "reason": reason}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema for OpenAPI (strict: extra keys refused)."""
    return model.model_json_schema(mode="validation")
