"""The monthly report (月报): made on the 1st for the previous month and sent through a
notification route — e-mail with the XLSX attached, WeCom/DingTalk a summary with a link,
a webhook the summary as JSON. SMS channels of the route are skipped (no attachment,
no summary worth a text).

:class:`MonthlyJob` runs on an injected clock. On the 1st of a month (a service down
on the 1st sends when it is back, up to ``catch_up_days``), until the previous month
has gone out on every channel of the route; what went out is kept in the history store's rule state
(``reports.monthly``), so a restart does not send twice and a channel that failed is
retried on the next tick without resending to the others. Each message carries an
idempotency key (``monthly-<org>-<YYYY-MM>-<channel>``) for receivers that dedupe.

The figures are the rollup's (:mod:`reports.service`), the same as the page's.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fleet.registry import Registry
from notify.channels import (
    DeliveryFailed,
    dingtalk_request,
    email_message,
    webhook_request,
    wecom_request,
)
from notify.config import NotifyConfig
from notify.http import HttpTransport
from notify.smtp import send_email
from reports.daily import local_day
from reports.files import report_xlsx
from reports.service import ReportQuery, report_json, report_levels
from store.rollup import RollupStore

__all__ = ["MONTHLY_ROUTE", "MonthlyJob", "previous_month", "summary_text"]

log = logging.getLogger(__name__)

#: The notification route the monthly report goes through (``[[notify.routes]] name``).
MONTHLY_ROUTE = "monthly_report"
STATE_NAME = "reports.monthly"
XLSX_TYPE = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")
MONTH_REPORTS = ("violations", "use", "handling", "online", "coverage")


def previous_month(day: dt.date) -> tuple[dt.date, dt.date]:
    last = day.replace(day=1) - dt.timedelta(days=1)
    return last.replace(day=1), last


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def summary_text(org_name: str, month: str, reps: dict[str, dict[str, Any]], link: str) -> str:
    """The summary in Markdown (WeCom/DingTalk render it; e-mail shows it as text)."""
    use, viol = reps["use"]["totals"], reps["violations"]["totals"]
    hand, onl = reps["handling"]["totals"], reps["online"]["totals"]
    cov = reps["coverage"]["totals"]
    kinds = [
        f"{c['zh']} {viol[c['key']]}"
        for c in reps["violations"]["columns"][1:-2]
        if viol.get(c["key"])
    ]
    y, m = month.split("-")
    lines = [
        f"### {org_name} {y}年{int(m)}月 公务用车月报",
        f"- 出行 {use['trips']} 次，里程 {use['km']} 公里，"
        f"出车车辆 {use['active']} / {use['vehicles']}",
        f"- 违规 {viol['total']} 起" + (f"（{'，'.join(kinds)}）" if kinds else ""),
        f"- 报警 {hand['alarms']} 起，10分钟内确认率 {_pct(hand['acked_10min_rate'])}",
        f"- 终端在线率 {_pct(onl['online_rate'])}",
        f"- 派车单覆盖率 {_pct(cov['coverage_rate'])}（无单出行 {cov['trips_uncovered']} 次）",
        f"- 详见：{link}",
    ]
    return "\n".join(lines)


@dataclass
class MonthlyJob:
    history: Any  # HistoryStore: rule state keeps what was sent
    rollup: RollupStore
    registry: Registry
    tz: str
    notify: NotifyConfig
    public_url: str
    route: str = MONTHLY_ROUTE
    http: HttpTransport | None = None
    catch_up_days: int = 3  # due on the 1st; a service down then still sends up to the 3rd
    on_sent: list[Callable[[dict[str, Any]], Any]] = field(default_factory=list)

    async def _state(self) -> dict[str, Any]:
        blob = await self.history.load_rule_state(STATE_NAME)
        return dict(json.loads(blob)) if blob else {}

    async def _save(self, state: dict[str, Any]) -> None:
        await self.history.save_rule_state(STATE_NAME, json.dumps(state).encode())

    def _roots(self) -> list[str]:
        tree = self.registry.orgs
        return [o for o, p in zip(tree.ids, tree.parent.tolist(), strict=True) if p < 0]

    async def build(self, org: str, first: dt.date, last: dt.date) -> dict[str, Any]:
        """The month's reports (JSON), its XLSX and its summary for one organisation."""
        tree = self.registry.orgs
        plates = dict(zip(self.registry.ids, self.registry.plates, strict=True))
        reps: dict[str, dict[str, Any]] = {}
        sheets: list[dict[str, Any]] = []
        for name in MONTH_REPORTS:
            q = ReportQuery(name, org, first, last)
            reps[name] = await report_json(self.rollup, tree, plates, q)
            sheets += await report_levels(self.rollup, tree, plates, q)
        month = first.strftime("%Y-%m")
        org_name = reps["use"]["org_name"]
        notes = [f"{org_name} {month} 公务用车月报，数据来自每日汇总，与平台页面一致。"]
        xlsx = report_xlsx(sheets, notes=notes, titled=True)
        link = (
            f"{self.public_url.rstrip('/')}/#/reports?org={org}"
            f"&from={first.isoformat()}&to={last.isoformat()}"
        )
        return {
            "org": org,
            "month": month,
            "reports": reps,
            "xlsx": xlsx,
            "filename": f"月报-{org}-{month}.xlsx",
            "subject": f"{org_name} {month} 公务用车月报",
            "text": summary_text(org_name, month, reps, link),
            "link": link,
        }

    async def tick(self, now_ms: int) -> list[dict[str, Any]]:
        """Send what is due; returns the deliveries made in this tick."""
        try:
            route = self.notify.route(self.route)
        except KeyError:
            return []
        today = local_day(now_ms, self.tz)
        if today.day > self.catch_up_days:
            return []
        first, last = previous_month(today)
        month = first.strftime("%Y-%m")
        state = await self._state()
        if state.get("month") != month:
            state = {"month": month, "sent": []}
        sent: set[str] = set(state["sent"])
        todo = [
            (org, ch)
            for org in self._roots()
            for ch in route.channels
            if f"{org}/{ch}" not in sent and self.notify.channel(ch).type != "sms"
        ]
        if not todo:
            return []
        made: dict[str, dict[str, Any]] = {}
        done: list[dict[str, Any]] = []
        for org, chname in todo:
            if org not in made:
                made[org] = await self.build(org, first, last)
            m = made[org]
            key = f"monthly-{org}-{month}-{chname}"
            try:
                await self._send(chname, m, key, now_ms)
            except DeliveryFailed as exc:
                log.warning("monthly report %s via %s failed: %s (retried)", key, chname, exc)
                continue
            sent.add(f"{org}/{chname}")
            state["sent"] = sorted(sent)
            await self._save(state)
            d = {"org": org, "month": month, "channel": chname}
            done.append(d)
            for cb in self.on_sent:
                cb(d)
        return done

    async def _send(self, chname: str, m: dict[str, Any], key: str, now_ms: int) -> None:
        # The injected clock decides what is due; signatures and the Date: header carry the
        # wall clock, which is what the far end checks them against.
        now_ms = int(time.time() * 1000)
        ch = self.notify.channel(chname)
        if ch.type == "email":
            msg = email_message(ch, m["subject"], m["text"], key, now_ms)
            msg.add_attachment(
                m["xlsx"], maintype=XLSX_TYPE[0], subtype=XLSX_TYPE[1], filename=m["filename"]
            )
            await send_email(ch, msg)
            return
        http = self.http or HttpTransport()
        try:
            if ch.type == "wecom":
                await http.send(wecom_request(ch, m["text"], key))
            elif ch.type == "dingtalk":
                await http.send(dingtalk_request(ch, m["subject"], m["text"], key, now_ms))
            elif ch.type == "webhook":
                body = orjson.dumps(
                    {
                        "event": "report.monthly",
                        "idempotency_key": key,
                        "org": m["org"],
                        "month": m["month"],
                        "text": m["text"],
                        "link": m["link"],
                        "totals": {n: r["totals"] for n, r in m["reports"].items()},
                    },
                    option=orjson.OPT_SORT_KEYS,
                )
                await http.send(webhook_request(ch, body, key, now_ms))
        finally:
            if self.http is None:
                await http.aclose()
