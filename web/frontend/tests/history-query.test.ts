import { describe, expect, it } from "vitest";
import type { Alarm } from "@/api/types";
import {
  alarmQuery,
  dayBefore,
  exportName,
  fromWall,
  pageOf,
  quickRange,
  rangeProblem,
  toWall,
} from "@/views/parts/query";

const SH = "Asia/Shanghai";
const H = 3_600_000;
// 2026-11-25 09:30:00 +08:00 (01:30 UTC)
const NOW = Date.UTC(2026, 10, 25, 1, 30);
const MIDNIGHT = Date.UTC(2026, 10, 24, 16, 0); // 2026-11-25 00:00 +08:00

function alarm(i: number, extra: Partial<Alarm> = {}): Alarm {
  return {
    id: `V${i}:speeding:${i}`,
    vehicle: `V${i}`,
    plate: i % 2 ? `川X1${i}` : `川A2${i}`,
    org: "wusheng",
    kind: "speeding",
    state: "open",
    started_at: NOW - i * 1000,
    lat: 30,
    lon: 106,
    ...extra,
  };
}

describe("time ranges in the fleet's zone", () => {
  it("今天 starts at the fleet's midnight, not the browser's or UTC's", () => {
    expect(quickRange("today", NOW, SH)).toEqual([MIDNIGHT, NOW]);
    // 00:30 in Shanghai is still the previous day in UTC: today is the Shanghai day.
    const early = MIDNIGHT + 30 * 60_000;
    expect(quickRange("today", early, SH)[0]).toBe(MIDNIGHT);
  });
  it("昨天 is the whole previous day and 近3天 starts two midnights back", () => {
    expect(quickRange("yesterday", NOW, SH)).toEqual([MIDNIGHT - 24 * H, MIDNIGHT]);
    expect(quickRange("last3", NOW, SH)).toEqual([MIDNIGHT - 48 * H, NOW]);
  });
  it("counts days across a DST change by the calendar (a zone that has one)", () => {
    // Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours.
    const after = Date.UTC(2026, 9, 26, 10);
    const [from, to] = quickRange("yesterday", after, "Europe/Berlin");
    expect(to - from).toBe(25 * H);
    expect(dayBefore(after, 1, "Europe/Berlin")).toBe("2026-10-25");
  });
  it("round-trips the pickers' wall-clock text", () => {
    const r: [number, number] = [MIDNIGHT - 36 * H, NOW];
    expect(toWall(r, SH)).toEqual(["2026-11-23 12:00:00", "2026-11-25 09:30:00"]);
    expect(fromWall(toWall(r, SH), SH)).toEqual(r);
  });
  it("rounds the end up to the second, so 'now' keeps the current second", () => {
    const r: [number, number] = [MIDNIGHT + 1_500, NOW + 250];
    expect(toWall(r, SH)).toEqual(["2026-11-25 00:00:01", "2026-11-25 09:30:01"]);
    const [from, to] = fromWall(toWall(r, SH), SH);
    expect(from).toBeLessThanOrEqual(r[0]);
    expect(to).toBeGreaterThanOrEqual(r[1]);
  });
  it("says why a range cannot be asked for", () => {
    expect(rangeProblem(null)).toBe("missing");
    expect(rangeProblem([NOW, NOW])).toBe("badOrder");
    expect(rangeProblem([NOW, NOW - 1])).toBe("badOrder");
    expect(rangeProblem([NOW - 31 * 24 * H, NOW])).toBe(null);
    expect(rangeProblem([NOW - 31 * 24 * H - 1, NOW])).toBe("tooLong");
    expect(rangeProblem([NOW - 2 * 24 * H, NOW], 1)).toBe("tooLong");
  });
});

describe("the query of /api/alarms", () => {
  it("carries every filter, times as epoch ms of the fleet's zone, and the page", () => {
    const q = alarmQuery(
      {
        org: "wusheng",
        kinds: ["speeding", "off_hours"],
        severity: "critical",
        plate: " 川X ",
        state: "open",
        range: ["2026-11-24 00:00:00", "2026-11-25 09:30:00"],
      },
      SH,
      { page: 3, pageSize: 50 },
    );
    expect(Object.fromEntries(q)).toEqual({
      org: "wusheng",
      kind: "speeding,off_hours",
      severity: "critical",
      plate: "川X",
      state: "open",
      from: String(MIDNIGHT - 24 * H),
      to: String(NOW),
      page: "3",
      page_size: "50",
    });
  });
  it("leaves out what is empty and keeps the page inside the contract", () => {
    const q = alarmQuery({ kinds: [], plate: "  ", state: "", range: null }, SH, { page: 0, pageSize: 10_000 });
    expect(Object.fromEntries(q)).toEqual({ page: "1", page_size: "500" });
  });
  it("exports with the same filters and no page", () => {
    const f = { org: "yuechi", range: ["2026-11-24 00:00:00", "2026-11-25 00:00:00"] as [string, string] };
    const q = Object.fromEntries(alarmQuery(f, SH, { format: "xlsx" }));
    expect(q).toEqual({ org: "yuechi", from: String(MIDNIGHT - 24 * H), to: String(MIDNIGHT), format: "xlsx" });
  });
  it("names the export by the days of the range (the end is exclusive)", () => {
    expect(exportName("报警记录", [MIDNIGHT - 24 * H, MIDNIGHT], SH, "xlsx")).toBe("报警记录_2026-11-24_2026-11-24.xlsx");
    expect(exportName("报警记录", null, SH, "csv")).toBe("报警记录.csv");
  });
});

describe("pages", () => {
  it("takes the server's total and page when it pages", () => {
    const rows = [alarm(1), alarm(2)];
    expect(pageOf({ total: 1234, page: 7, page_size: 2, alarms: rows }, 7, 2)).toEqual({
      total: 1234,
      page: 7,
      pageSize: 2,
      alarms: rows,
    });
  });
  it("pages and filters an older server's whole answer itself", () => {
    const rows = Array.from({ length: 45 }, (_, i) => alarm(i + 1));
    const p3 = pageOf({ alarms: rows }, 3, 20);
    expect(p3.total).toBe(45);
    expect(p3.alarms.map((a) => a.id)).toEqual(rows.slice(40).map((a) => a.id));
    const x = pageOf({ alarms: rows }, 1, 100, { plate: "x1" });
    expect(x.total).toBe(23);
    expect(x.alarms.every((a) => a.plate.startsWith("川X1"))).toBe(true);
    const crit = pageOf({ alarms: [alarm(1, { severity: "critical" }), alarm(2)] }, 1, 20, { severity: "critical" });
    expect(crit.alarms.map((a) => a.vehicle)).toEqual(["V1"]);
  });
});
