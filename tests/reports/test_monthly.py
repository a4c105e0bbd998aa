"""The monthly report: due on the 1st (injected clock), built from the rollup, sent through
the ``monthly_report`` route — e-mail with the XLSX to a local SMTP server, WeCom and
DingTalk summaries to a local receiver; a failed channel is retried alone, nothing twice."""

from __future__ import annotations

import datetime as dt
import email
import io
import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from notify.config import NotifyConfig
from reports.daily import build_day
from reports.monthly import MonthlyJob
from reports.service import ReportQuery, report_json
from store.history import day_bounds_ms
from store.sqlite import SQLiteHistory
from tests.notify.conftest import DING_SECRET, receiver, smtp_server  # noqa: F401 (fixtures)
from tests.reports.conftest import DAYS, TZ, seed
from tests.web.conftest import web_config

pytestmark = pytest.mark.services


async def test_monthly_report_arrives(
    tmp_path: Path,
    receiver: Any,  # noqa: F811
    smtp_server: Any,  # noqa: F811
) -> None:
    ctl, mail = smtp_server
    cfg = web_config(tmp_path)
    from fleet.registry import Registry

    reg = Registry.from_config(cfg)
    history = SQLiteHistory(cfg.store)
    await history.open(reg)
    try:
        s = await seed(history, reg)
        for d in DAYS:
            await build_day(history, s.rollup, reg, d, TZ, now_ms=s.now, orders=s.orders)
        notify = NotifyConfig.model_validate(
            {
                "channels": [
                    {
                        "type": "email",
                        "name": "mail",
                        "host": "127.0.0.1",
                        "port": ctl.port,
                        "sender": "fleetwatch@example.org",
                        "to": ["office@example.org"],
                        "timeout_s": 5,
                    },
                    {"type": "wecom", "name": "wecom", "url": receiver.url + "/wecom"},
                    {
                        "type": "dingtalk",
                        "name": "ding",
                        "url": receiver.url + "/dingtalk?access_token=t",
                        "secret": DING_SECRET,
                    },
                ],
                "routes": [{"name": "monthly_report", "channels": ["mail", "wecom", "ding"]}],
            }
        )
        job = MonthlyJob(history, s.rollup, reg, TZ, notify, "https://fw.example.org")
        nov30, _ = day_bounds_ms(dt.date(2025, 11, 30), TZ)
        assert await job.tick(nov30 + 10 * 3_600_000) == []  # not the 1st
        dec1, _ = day_bounds_ms(dt.date(2025, 12, 1), TZ)
        first = await job.tick(dec1 + 8 * 3_600_000)
        # the SMTP server refuses the first message (451): the robots got theirs
        assert sorted(d["channel"] for d in first) == ["ding", "wecom"]
        assert mail.messages == []
        second = await job.tick(dec1 + 8 * 3_600_000 + 60_000)
        assert [d["channel"] for d in second] == ["mail"]
        assert await job.tick(dec1 + 9 * 3_600_000) == []  # nothing twice
        # a restart keeps what was sent (the history store's rule state)
        job2 = MonthlyJob(history, s.rollup, reg, TZ, notify, "https://fw.example.org")
        assert await job2.tick(dec1 + 10 * 3_600_000) == []

        use = await report_json(
            s.rollup,
            reg.orgs,
            {},
            ReportQuery("use", "city", dt.date(2025, 11, 1), dt.date(2025, 11, 30)),
        )
        assert len(mail.messages) == 1
        msg = email.message_from_bytes(mail.messages[0])
        assert "2025-11" in str(
            email.header.make_header(email.header.decode_header(msg["Subject"]))
        )
        parts = {p.get_content_type(): p for p in msg.walk()}
        body = parts["text/plain"].get_payload(decode=True).decode()
        assert f"出行 {use['totals']['trips']} 次" in body
        xlsx = parts[
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        ].get_payload(decode=True)
        wb = openpyxl.load_workbook(io.BytesIO(xlsx))
        assert "车辆使用-区县" in wb.sheetnames and "违规统计-区县" in wb.sheetnames
        rows = list(wb["车辆使用-区县"].iter_rows(values_only=True))
        keys = [c["key"] for c in use["columns"]]
        assert rows[-1][0] == "合计"
        assert rows[-1][keys.index("trips")] == use["totals"]["trips"] == 18

        (wecom,) = receiver.unique("/wecom")
        text = json.loads(wecom.body)["markdown"]["content"]
        assert "2025年11月" in text and "出行 18 次" in text
        assert "https://fw.example.org/#/reports?org=city&from=2025-11-01&to=2025-11-30" in text
        (ding,) = receiver.unique("/dingtalk")
        assert "出行 18 次" in json.loads(ding.body)["markdown"]["text"]
    finally:
        await history.close()
