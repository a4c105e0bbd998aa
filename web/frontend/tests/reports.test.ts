import { describe, expect, it } from "vitest";
import type { Org } from "@/api/types";
import {
  alarmHistoryQuery,
  backTo,
  boardQuery,
  canDrill,
  chartColumn,
  childLevel,
  dateProblem,
  daysIn,
  drillInto,
  figureKind,
  formatFigure,
  formatSeconds,
  lastMonth,
  levelOfOrg,
  monthRange,
  monthToDate,
  nextLevel,
  normalizeSummary,
  orgChain,
  orgTree,
  pathFromQuery,
  pathToQuery,
  prevLevel,
  reportFileName,
  reportPath,
  reportQuery,
  rotateSeconds,
  rotationAt,
  startPath,
  itemsOfCell,
  violationKind,
  violationLink,
  violationSeverity,
  BOARD_PANELS,
} from "@/domain/reports";
import en from "@/i18n/en";
import zh from "@/i18n/zh";

// The demo's city: 广安市 with counties, two of which have units.
const ORGS: Org[] = [
  { id: "ga", name: "广安市", parent: null },
  { id: "ga-ws", name: "武胜县", parent: "ga" },
  { id: "ga-yc", name: "岳池县", parent: "ga" },
  { id: "ga-yc-nyj", name: "岳池县农业农村局", parent: "ga-yc" },
  { id: "ga-yc-nyj-x", name: "农业执法队", parent: "ga-yc-nyj" },
];
const U = { h: "小时", min: "分钟", s: "秒" };

describe("levels and the organisation tree", () => {
  it("steps between levels and stops at both ends", () => {
    expect(nextLevel("city")).toBe("county");
    expect(nextLevel("unit")).toBe("vehicle");
    expect(nextLevel("vehicle")).toBeNull();
    expect(prevLevel("county")).toBe("city");
    expect(prevLevel("city")).toBeNull();
  });
  it("builds the tree, orphans and cycles included, each org once", () => {
    const tree = orgTree(ORGS);
    expect(tree.map((n) => n.value)).toEqual(["ga"]);
    expect(tree[0].children.map((n) => n.label)).toEqual(["武胜县", "岳池县"]);
    expect(tree[0].children[1].children[0].children[0].value).toBe("ga-yc-nyj-x");
    const orphan = orgTree([{ id: "u", name: "某局", parent: "unknown" }]);
    expect(orphan.map((n) => n.value)).toEqual(["u"]);
    const cyc = orgTree([
      { id: "a", name: "A", parent: "b" },
      { id: "b", name: "B", parent: "a" },
    ]);
    const all: string[] = [];
    const walk = (ns: typeof cyc) => ns.forEach((n) => (all.push(n.value), walk(n.children)));
    walk(cyc);
    expect(all.sort()).toEqual(["a", "b"]);
  });
  it("knows each org's level and the level of the rows under it", () => {
    expect(levelOfOrg(ORGS, "ga")).toBe("city");
    expect(levelOfOrg(ORGS, "ga-ws")).toBe("county");
    expect(levelOfOrg(ORGS, "ga-yc-nyj")).toBe("unit");
    expect(levelOfOrg(ORGS, "ga-yc-nyj-x")).toBe("unit"); // deeper than a unit is still a unit
    expect(childLevel(ORGS, "ga")).toBe("county");
    expect(childLevel(ORGS, "ga-yc")).toBe("unit");
    expect(childLevel(ORGS, "ga-ws")).toBe("vehicle"); // a county without units lists its vehicles
    expect(childLevel(ORGS, "ga-yc-nyj")).toBe("vehicle"); // below a unit: its vehicles
    expect(orgChain(ORGS, "ga-yc-nyj").map((o) => o.id)).toEqual(["ga", "ga-yc", "ga-yc-nyj"]);
  });
});

describe("the drill-down path", () => {
  it("goes city → county → unit → vehicle and back up", () => {
    let p = startPath(ORGS, "ga");
    expect(p).toEqual([{ org: "ga", name: "广安市", level: "county" }]);
    p = drillInto(p, { org: "ga-yc", name: "岳池县" }, ORGS, "unit")!;
    expect(p[1]).toEqual({ org: "ga-yc", name: "岳池县", level: "unit" });
    p = drillInto(p, { org: "ga-yc-nyj", name: "岳池县农业农村局" }, ORGS, "vehicle")!;
    expect(p.map((c) => c.level)).toEqual(["county", "unit", "vehicle"]);
    const leaf = p;
    // 编制 has no vehicle level: its units do not open.
    expect(drillInto(p.slice(0, 2), { org: "ga-yc-nyj", name: "岳池县农业农村局" }, ORGS, null, false)).toBeNull();
    expect(canDrill(p.slice(0, 1), { org: "ga-yc" }, ORGS, false)).toBe(true);
    // A county without units opens onto its vehicles.
    expect(drillInto(p.slice(0, 1), { org: "ga-ws", name: "武胜县" }, ORGS, "unit")![1].level).toBe("vehicle");
    // A vehicle row never opens; nothing under the vehicle level.
    expect(drillInto(leaf, { org: "x", vehicle: "V1" }, ORGS, null)).toBeNull();
    expect(canDrill(p, { org: "ga-yc-nyj", vehicle: "V00001" }, ORGS)).toBe(false);
    expect(backTo(leaf, 0)).toEqual(startPath(ORGS, "ga"));
    expect(backTo(leaf, 1).length).toBe(2);
    expect(backTo(leaf, 1)[1].level).toBe("unit");
    expect(backTo(leaf, 9)).toEqual(leaf);
    expect(backTo(leaf, -1)).toEqual(leaf);
  });
  it("uses the server's children_level for an org outside the tree, refuses loops and blanks", () => {
    const p = startPath(ORGS, "ga");
    expect(drillInto(p, { org: "far", name: "外单位" }, ORGS, "unit")![1].level).toBe("unit");
    expect(drillInto(p, { org: "far" }, ORGS, "nonsense")![1]).toEqual({ org: "far", name: "far", level: "unit" });
    expect(drillInto(p, { org: "ga", name: "广安市" }, ORGS, "county")).toBeNull();
    expect(drillInto(p, { name: "合计" }, ORGS, "county")).toBeNull();
    expect(drillInto([], { org: "ga" }, ORGS, "county")).toBeNull();
  });
  it("opens a 本级 row onto the vehicles the organisation holds itself", () => {
    const p = startPath(ORGS, "ga");
    const own = drillInto(p, { org: "ga", name: "广安市（本级）", own: true }, ORGS, "unit")!;
    expect(own[1]).toEqual({ org: "ga", name: "广安市（本级）", level: "vehicle", own: true });
    expect(drillInto(p, { org: "ga", own: true }, ORGS, "unit", false)).toBeNull();
    expect(pathToQuery(own)).toBe("ga,ga~");
    expect(pathFromQuery("ga,ga~", ORGS)).toEqual(own);
    expect(pathFromQuery("ga~", ORGS)).toBeNull();
  });
  it("keeps the path in the address and refuses one that is not a path", () => {
    const p = drillInto(startPath(ORGS, "ga"), { org: "ga-yc", name: "岳池县" }, ORGS, null)!;
    expect(pathToQuery(p)).toBe("ga,ga-yc");
    expect(pathFromQuery("ga,ga-yc", ORGS)).toEqual(p);
    expect(pathFromQuery("ga,nope", ORGS)).toBeNull();
    expect(pathFromQuery("", ORGS)).toBeNull();
  });
});

describe("dates and queries", () => {
  it("knows months, last month and the month so far", () => {
    expect(monthRange("2026-02")).toEqual(["2026-02-01", "2026-02-28"]);
    expect(monthRange("2028-02")).toEqual(["2028-02-01", "2028-02-29"]);
    expect(monthRange("2026-12")).toEqual(["2026-12-01", "2026-12-31"]);
    expect(() => monthRange("2026-13")).toThrow();
    expect(() => monthRange("26-1")).toThrow();
    expect(lastMonth("2026-01-15")).toBe("2025-12");
    expect(lastMonth("2026-12-02")).toBe("2026-11");
    expect(monthToDate("2026-12-02")).toEqual(["2026-12-01", "2026-12-02"]);
  });
  it("says what is wrong with a range", () => {
    expect(dateProblem("2026-11-01", "2026-11-30")).toBeNull();
    expect(dateProblem("2026-11-30", "2026-11-30")).toBeNull();
    expect(dateProblem("", "2026-11-30")).toBe("missing");
    expect(dateProblem("2026-02-30", "2026-03-01")).toBe("badDay");
    expect(dateProblem("2026-12-01", "2026-11-30")).toBe("badOrder");
    expect(dateProblem("2025-01-01", "2026-01-02")).toBe("tooLong");
    expect(dateProblem("2025-01-01", "2026-01-01")).toBeNull(); // 366 days
    expect(daysIn("2026-11-01", "2026-11-30")).toBe(30);
    expect(daysIn("x", "y")).toBe(0);
  });
  it("asks the API with the same filters for the table and its exports", () => {
    const f = { org: "ga-ws", from: "2026-11-01", to: "2026-11-30", level: "vehicle" as const };
    expect(reportQuery(f).toString()).toBe("org=ga-ws&from=2026-11-01&to=2026-11-30&level=vehicle");
    expect(reportPath("use", f, "xlsx")).toBe("/api/reports/use?org=ga-ws&from=2026-11-01&to=2026-11-30&level=vehicle&format=xlsx");
    expect(reportQuery({ org: "", from: "a", to: "b" }, "csv").toString()).toBe("from=a&to=b&format=csv");
    expect(reportQuery({ org: "", from: "a", to: "b" }, "xlsx", "en").toString()).toBe("from=a&to=b&format=xlsx&lang=en");
    expect(reportQuery({ org: "", from: "a", to: "b" }, "json", "en").toString()).toBe("from=a&to=b");
    expect(reportQuery({ org: "ga", from: "a", to: "b", level: "vehicle", own: true }).toString()).toBe("org=ga&from=a&to=b&level=vehicle&own=1");
    expect(reportFileName("违规统计", "广安 市/x", f, "xlsx")).toBe("违规统计_广安_市_x_2026-11-01_2026-11-30.xlsx");
    expect(boardQuery("ga", "2026-12-02").toString()).toBe("org=ga&date=2026-12-02");
    expect(boardQuery(null).toString()).toBe("");
  });
  it("opens the alarm history on a count's days in the fleet's zone", () => {
    const q = alarmHistoryQuery({ org: "ga-ws", kind: "speeding" }, "2026-11-01", "2026-11-30", "Asia/Shanghai");
    expect(q).toEqual({
      org: "ga-ws",
      kind: "speeding",
      from: String(Date.UTC(2026, 9, 31, 16)), // 2026-11-01 00:00 +08:00
      to: String(Date.UTC(2026, 10, 30, 16)), // 2026-12-01 00:00 +08:00
    });
    expect(alarmHistoryQuery({ plate: "川X00001", severity: "critical" }, "2026-11-30", "2026-11-30", "UTC")).toEqual({
      plate: "川X00001",
      severity: "critical",
      from: String(Date.UTC(2026, 10, 30)),
      to: String(Date.UTC(2026, 11, 1)),
    });
  });
});

describe("figures", () => {
  it("guesses a column's kind from its hint or key", () => {
    expect(figureKind({ key: "name" })).toBe("text");
    expect(figureKind({ key: "trips" })).toBe("int");
    expect(figureKind({ key: "km" })).toBe("km");
    expect(figureKind({ key: "online_share" })).toBe("pct");
    expect(figureKind({ key: "ack_median_s" })).toBe("duration");
    expect(figureKind({ key: "x", type: "pct" })).toBe("pct");
    expect(figureKind({ key: "online_rate", type: "rate" })).toBe("pct");
    expect(figureKind({ key: "ack_avg_min", type: "float" })).toBe("float");
    expect(figureKind({ key: "name", type: "text" })).toBe("text");
    expect(figureKind({ key: "km", type: "int" })).toBe("int");
  });
  it("writes figures: dash for none, groups, one decimal km, shares, durations", () => {
    expect(formatFigure(null, "int")).toBe("—");
    expect(formatFigure(undefined, "km")).toBe("—");
    expect(formatFigure(Number.NaN, "int")).toBe("—");
    expect(formatFigure(12345, "int")).toBe("12,345");
    expect(formatFigure(-1234567, "int")).toBe("-1,234,567");
    expect(formatFigure(0, "int")).toBe("0");
    expect(formatFigure(1234.56, "km")).toBe("1,234.6");
    expect(formatFigure(2.349, "float")).toBe("2.3");
    expect(formatFigure(0.9354, "pct")).toBe("93.5%");
    expect(formatFigure(1, "pct")).toBe("100.0%");
    expect(formatFigure(3900, "duration", U)).toBe("1 小时 5 分钟");
    expect(formatFigure("武胜县", "text")).toBe("武胜县");
    expect(formatSeconds(250, U)).toBe("4 分钟 10 秒");
    expect(formatSeconds(7200, U)).toBe("2 小时");
    expect(formatSeconds(-3, U)).toBe("0 秒");
  });
  it("charts the report's main figure, else the first number", () => {
    const cols = [
      { key: "name", zh: "单位", en: "Unit" },
      { key: "speeding", zh: "超速", en: "Speeding" },
      { key: "total", zh: "合计", en: "Total" },
    ];
    const rows = [{ name: "武胜县", speeding: 3, total: 5 }];
    expect(chartColumn("violations", cols, rows)?.key).toBe("total");
    expect(chartColumn("use", cols, rows)?.key).toBe("speeding");
    expect(chartColumn("use", cols.slice(0, 1), rows)).toBeNull();
  });
  it("links a violation count above zero to the alarm history", () => {
    const kinds = ["speeding", "off_hours"];
    expect(violationKind({ key: "speeding" }, kinds)).toBe("speeding");
    expect(violationKind({ key: "kind_off_hours" }, kinds)).toBe("off_hours");
    expect(violationKind({ key: "total" }, kinds)).toBeNull();
    expect(violationLink({ key: "speeding" }, 2, kinds)).toBe(true);
    expect(violationLink({ key: "total" }, 7, kinds)).toBe(true);
    expect(violationLink({ key: "speeding" }, 0, kinds)).toBe(false);
    expect(violationLink({ key: "km" }, 12, kinds)).toBe(false);
    expect(violationLink({ key: "critical" }, 1, kinds)).toBe(true);
    expect(violationSeverity({ key: "critical" })).toBe("critical");
    const items = [
      { alarm_id: "a", vehicle_id: "V1", org: "u", kind: "speeding", severity: "warning", started_at: 1, ack_s: null, handle_s: null },
      { alarm_id: "b", vehicle_id: "V2", org: "u", kind: "speeding", severity: "critical", started_at: 2, ack_s: 30, handle_s: null },
      { alarm_id: "c", vehicle_id: "V1", org: "u", kind: "off_hours", severity: "critical", started_at: 3, ack_s: 30, handle_s: 60 },
    ];
    expect(itemsOfCell(items, { kind: "speeding" }).map((a) => a.alarm_id)).toEqual(["a", "b"]);
    expect(itemsOfCell(items, { vehicle: "V1" }).map((a) => a.alarm_id)).toEqual(["a", "c"]);
    expect(itemsOfCell(items, { severity: "critical", vehicle: "V1" }).map((a) => a.alarm_id)).toEqual(["c"]);
    expect(itemsOfCell(items, {}).length).toBe(3);
  });
});

describe("the board", () => {
  it("reads the summary with today's figures at the top or under today", () => {
    const top = normalizeSummary({
      org: "ga",
      date: "2026-12-02",
      quota: 120,
      actual: 118,
      online: 100,
      trips: 40,
      alarms: 7,
      costs: null,
      trend7: [{ date: "2026-12-01", trips: 3, km: 10.5, alarms: 1 }],
      alarms_by_kind: { speeding: 5, off_hours: 2, fatigue: 0 },
      attention: { violations: [{ org: "ga-ws", name: "武胜县", violations: 5 }], low_online: [{ org: "ga-yc", name: "岳池县", online_share: 0.5 }] },
      idle: [{ vehicle: "V1", plate: "川X1", org: "ga-ws", days: 9 }],
    });
    expect(top.today).toEqual({ quota: 120, actual: 118, online: 100, trips: 40, alarms: 7, costs: null, km: null });
    expect(top.alarmsByKind).toEqual([
      ["speeding", 5],
      ["off_hours", 2],
    ]);
    expect(top.attention.violations).toEqual([{ org: "ga-ws", name: "武胜县", value: 5 }]);
    expect(top.attention.low_online[0].value).toBe(0.5);
    expect(top.attention.slow_handling).toEqual([]);
    expect(top.trend30).toEqual([]);
    expect(top.idle[0]).toEqual({ vehicle: "V1", plate: "川X1", org: "ga-ws", days: 9, last: null });
    const nested = normalizeSummary({ today: { quota: 1, actual: 2, online: 3, trips: 4, alarms: { total: 5 }, costs: 6.5 }, alarms_by_kind: [{ kind: "speeding", count: 2 }] });
    expect(nested.today.alarms).toBe(5);
    expect(nested.today.costs).toBe(6.5);
    expect(nested.alarmsByKind).toEqual([["speeding", 2]]);
    expect(normalizeSummary({}).today.quota).toBeNull();
    // The server's reading: minutes to acknowledge, online_rate, idle with the last trip's day.
    const srv = normalizeSummary({
      date: "2026-12-02",
      attention: { slow_handling: [{ org: "u", name: "某局", ack_avg_min: 2.5, acked_10min_rate: 0.5 }], low_online: [{ org: "u", name: "某局", online_rate: 0.8 }] },
      idle_days: 7,
      idle: [
        { vehicle: "V1", name: "川X1", org: "u", last_trip_day: "2026-11-20" },
        { vehicle: "V2", name: "川X2", org: "u", last_trip_day: null },
      ],
    });
    expect(srv.attention.slow_handling[0].value).toBe(150);
    expect(srv.attention.low_online[0].value).toBe(0.8);
    expect(srv.idle).toEqual([
      { vehicle: "V1", plate: "川X1", org: "u", days: 12, last: "2026-11-20" },
      { vehicle: "V2", plate: "川X2", org: "u", days: null, last: null },
    ]);
    expect(srv.idleDays).toBe(7);
  });
  it("turns the wall screen's panels every N seconds, round and round", () => {
    const seen = Array.from({ length: 6 }, (_, i) => rotationAt(BOARD_PANELS, i * 15_000 + 1, 15).panel);
    expect(seen).toEqual([...BOARD_PANELS, ...BOARD_PANELS.slice(0, 2)]);
    expect(rotationAt(BOARD_PANELS, -100, 15)).toEqual({ panel: BOARD_PANELS[0], index: 0, nextInMs: 15_000 });
    expect(rotationAt(BOARD_PANELS, 14_000, 15).nextInMs).toBe(1_000);
    expect(() => rotationAt([], 0, 10)).toThrow();
    expect(rotateSeconds("20")).toBe(20);
    expect(rotateSeconds("1")).toBe(3);
    expect(rotateSeconds("99999")).toBe(600);
    expect(rotateSeconds("abc")).toBe(10);
    expect(rotateSeconds(undefined)).toBe(10);
  });
});

describe("messages of the reports and the board", () => {
  it("name every report, level and panel in Chinese and English", () => {
    for (const dict of [zh, en]) {
      for (const n of ["violations", "use", "handling", "online", "coverage", "quota"]) {
        expect((dict.reports.names as Record<string, string>)[n]).toBeTruthy();
      }
      for (const l of ["city", "county", "unit", "vehicle"]) expect((dict.reports.levels as Record<string, string>)[l]).toBeTruthy();
      for (const p of BOARD_PANELS) expect((dict.board.panels as Record<string, string>)[p]).toBeTruthy();
    }
    expect(zh.reports.names.violations).toBe("违规统计");
    expect(zh.board.title).toBe("一图可览");
  });
});
