"""The [notify] table: what it accepts and how it refuses."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from notify.config import DingTalkChannel, NotifyConfig, WeComChannel

README_TOML = """
[notify]
enabled = true
max_attempts = 8

[[notify.channels]]
name = "duty-wecom"
type = "wecom"
url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"

[[notify.channels]]
name = "leaders-dingtalk"
type = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token=xxxxxxxx"
secret = "SECxxxxxxxxxxxxxxxx"
at_mobiles = ["13800000000"]

[[notify.channels]]
name = "office-mail"
type = "email"
host = "smtp.example.gov.cn"
port = 465
security = "tls"
username = "fleetwatch@example.gov.cn"
password = "app-password"
sender = "fleetwatch@example.gov.cn"
to = ["duty@example.gov.cn"]

[[notify.routes]]
name = "duty"
orgs = ["qx"]
channels = ["duty-wecom", "office-mail"]
quiet_hours = "23:00-07:00"
storm_per_minute = 10
escalate_to = "leaders"
escalate_after_s = 600

[[notify.routes]]
name = "leaders"
channels = ["leaders-dingtalk"]
escalation_only = true
"""


def test_readme_example_parses() -> None:
    cfg = NotifyConfig.model_validate(tomllib.loads(README_TOML)["notify"])
    assert isinstance(cfg.channel("duty-wecom"), WeComChannel)
    ding = cfg.channel("leaders-dingtalk")
    assert isinstance(ding, DingTalkChannel) and ding.secret is not None
    assert "SECxxx" not in repr(ding)  # secrets stay out of logs
    assert cfg.route("duty").escalate_to == "leaders"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"routes": [{"name": "r", "channels": ["nope"]}]}, "unknown channel"),
        ({"routes": [{"name": "r", "channels": ["h"], "kinds": ["speed"]}]}, "unknown alarm kind"),
        ({"routes": [{"name": "r", "channels": ["h"], "quiet_hours": "22-7"}]}, "quiet_hours"),
        ({"routes": [{"name": "r", "channels": ["h"], "escalate_to": "r"}]}, "itself"),
        ({"routes": [{"name": "r", "channels": ["h"], "escalate_to": "x"}]}, "unknown route"),
        ({"channels": [{"type": "sms", "name": "s"}]}, "type"),
    ],
)
def test_refused(change: dict[str, object], message: str) -> None:
    data: dict[str, object] = {
        "channels": [{"type": "webhook", "name": "h", "url": "http://127.0.0.1/x"}],
        **change,
    }
    with pytest.raises(ValidationError, match=message):
        NotifyConfig.model_validate(data)
