// Pure rules of the history views: time ranges in the fleet's zone (the pickers show wall-clock
// times of that zone, whatever the browser's zone), and the query strings of /api/alarms
// (CONTRACTS.md "History and geography API"). No Vue, no fetch: they test without a browser.
import type { Alarm } from "@/api/types";
import { severityOf } from "@/domain/alarms";
import { dayStartMs, formatDay, formatTime, zonedToMs } from "@/format/time";

const DAY_MS = 86_400_000;
/** The track API serves at most 31 days at once (CONTRACTS.md). */
export const MAX_RANGE_DAYS = 31;
/** page_size of /api/alarms is at most 500 (CONTRACTS.md). */
export const MAX_PAGE_SIZE = 500;

export type QuickRange = "today" | "yesterday" | "last3";
export const QUICK_RANGES: readonly QuickRange[] = ["today", "yesterday", "last3"];

/** A range as the pickers hold it: "YYYY-MM-DD HH:mm:ss" in the fleet's zone. */
export type WallRange = [string, string];

/** The day `n` days before the day of `ms` (fleet zone), as YYYY-MM-DD. */
export function dayBefore(ms: number, n: number, zone: string): string {
  const today = dayStartMs(formatDay(ms, zone), zone);
  // Noon of the target day, so a 23- or 25-hour day never moves the date.
  return formatDay(today - n * DAY_MS + DAY_MS / 2, zone);
}

/** 今天: 00:00 today → now; 昨天: the whole of yesterday; 近3天: 00:00 two days ago → now. */
export function quickRange(which: QuickRange, now: number, zone: string): [number, number] {
  const today = dayStartMs(formatDay(now, zone), zone);
  if (which === "today") return [today, now];
  if (which === "yesterday") return [dayStartMs(dayBefore(now, 1, zone), zone), today];
  return [dayStartMs(dayBefore(now, 2, zone), zone), now];
}

/**
 * The pickers' text of a range. They hold whole seconds: the end is rounded up, so a range
 * ending "now" still holds what happened in the current second (an audit entry, an alarm).
 */
export function toWall(range: [number, number], zone: string): WallRange {
  return [formatTime(range[0], zone), formatTime(Math.ceil(range[1] / 1000) * 1000, zone)];
}

/** Epoch ms of a picker's range; throws on a text that is not a time. */
export function fromWall(range: WallRange, zone: string): [number, number] {
  return [zonedToMs(range[0], zone), zonedToMs(range[1], zone)];
}

export type RangeProblem = "missing" | "badOrder" | "tooLong" | null;

/** Why a range cannot be asked for, or null. */
export function rangeProblem(range: [number, number] | null, maxDays = MAX_RANGE_DAYS): RangeProblem {
  if (!range || !Number.isFinite(range[0]) || !Number.isFinite(range[1])) return "missing";
  if (range[1] <= range[0]) return "badOrder";
  if (range[1] - range[0] > maxDays * DAY_MS) return "tooLong";
  return null;
}

export interface AlarmFilter {
  org?: string;
  kinds?: string[];
  severity?: string;
  plate?: string;
  state?: "" | "open" | "closed";
  /** Wall-clock range in the fleet's zone, or null for any time. */
  range?: WallRange | null;
}

/** The query of GET /api/alarms for one page, or for the export (format, no page). */
export function alarmQuery(
  f: AlarmFilter,
  zone: string,
  page: { page: number; pageSize: number } | { format: "csv" | "xlsx" },
): URLSearchParams {
  const q = new URLSearchParams();
  if (f.org) q.set("org", f.org);
  if (f.kinds && f.kinds.length) q.set("kind", f.kinds.join(","));
  if (f.severity) q.set("severity", f.severity);
  const plate = (f.plate ?? "").trim();
  if (plate) q.set("plate", plate);
  if (f.state) q.set("state", f.state);
  if (f.range && f.range[0] && f.range[1]) {
    const [from, to] = fromWall(f.range, zone);
    q.set("from", String(from));
    q.set("to", String(to));
  }
  if ("format" in page) {
    q.set("format", page.format);
  } else {
    q.set("page", String(Math.max(1, Math.floor(page.page))));
    q.set("page_size", String(Math.min(MAX_PAGE_SIZE, Math.max(1, Math.floor(page.pageSize)))));
  }
  return q;
}

export interface AlarmPage {
  total: number;
  page: number;
  pageSize: number;
  alarms: Alarm[];
}

/**
 * One page of the answer. A server without paging (it answers `{"alarms"}` only, newest first)
 * is paged here, so the view works before and after the paging API lands.
 */
export function pageOf(
  resp: { alarms: Alarm[]; total?: number; page?: number; page_size?: number },
  page: number,
  pageSize: number,
  f: AlarmFilter = {},
): AlarmPage {
  if (typeof resp.total === "number") {
    return { total: resp.total, page: resp.page ?? page, pageSize: resp.page_size ?? pageSize, alarms: resp.alarms };
  }
  const rows = resp.alarms.filter((a) => matchesLocally(a, f));
  const start = (page - 1) * pageSize;
  return { total: rows.length, page, pageSize, alarms: rows.slice(start, start + pageSize) };
}

/** The filters an older server ignores (plate, severity), applied to its answer. */
export function matchesLocally(a: Alarm, f: AlarmFilter): boolean {
  const plate = (f.plate ?? "").trim().toUpperCase();
  if (plate && !a.plate.toUpperCase().includes(plate)) return false;
  if (f.severity && severityOf(a) !== f.severity) return false;
  return true;
}

/** The file name of an export: 报警记录_2026-11-25_2026-11-27.xlsx (dates in the fleet's zone). */
export function exportName(base: string, range: [number, number] | null, zone: string, ext: string): string {
  if (!range) return `${base}.${ext}`;
  return `${base}_${formatDay(range[0], zone)}_${formatDay(range[1] - 1, zone)}.${ext}`;
}
