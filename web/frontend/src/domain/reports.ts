// Pure rules of the 报表 page and the 一图可览 board (CONTRACTS.md "Reports"): the organisation
// tree and its levels, the drill-down path city → county → unit → vehicle, the query strings of
// /api/reports/{name} and /api/board/summary, how a figure is written, and the wall screen's
// rotation. No Vue, no fetch: they test without a browser.
import type { Org } from "@/api/types";
import { dayStartMs } from "@/format/time";

export const REPORT_NAMES = ["violations", "use", "handling", "online", "coverage", "quota"] as const;
export type ReportName = (typeof REPORT_NAMES)[number];

export const LEVELS = ["city", "county", "unit", "vehicle"] as const;
export type Level = (typeof LEVELS)[number];

export function isLevel(v: unknown): v is Level {
  return typeof v === "string" && (LEVELS as readonly string[]).includes(v);
}

export function isReportName(v: unknown): v is ReportName {
  return typeof v === "string" && (REPORT_NAMES as readonly string[]).includes(v);
}

/** The level below `level`, null under vehicles. */
export function nextLevel(level: Level): Level | null {
  const i = LEVELS.indexOf(level);
  return i >= 0 && i < LEVELS.length - 1 ? LEVELS[i + 1] : null;
}

/** The level above `level`, null above the city. */
export function prevLevel(level: Level): Level | null {
  const i = LEVELS.indexOf(level);
  return i > 0 ? LEVELS[i - 1] : null;
}

// -- the organisation tree ------------------------------------------------------------------

export interface OrgNode {
  value: string;
  label: string;
  children: OrgNode[];
}

/**
 * The organisations as a tree (for el-tree-select), roots first in the order given. An org whose
 * parent is unknown (outside the user's scope) is a root. A cycle never loops: each org is
 * placed once.
 */
export function orgTree(orgs: readonly Org[]): OrgNode[] {
  const ids = new Set(orgs.map((o) => o.id));
  const kids = new Map<string, Org[]>();
  for (const o of orgs) {
    const p = o.parent && ids.has(o.parent) && o.parent !== o.id ? o.parent : "";
    kids.set(p, [...(kids.get(p) ?? []), o]);
  }
  const placed = new Set<string>();
  const build = (o: Org): OrgNode => {
    placed.add(o.id);
    return {
      value: o.id,
      label: o.name,
      children: (kids.get(o.id) ?? []).filter((c) => !placed.has(c.id)).map(build),
    };
  };
  const roots = (kids.get("") ?? []).map(build);
  // Whatever a cycle left unplaced becomes a root of its own.
  for (const o of orgs) if (!placed.has(o.id)) roots.push(build(o));
  return roots;
}

/** Depth of an organisation in the tree (0 for a root), -1 if unknown. */
export function orgDepth(orgs: readonly Org[], id: string): number {
  const byId = new Map(orgs.map((o) => [o.id, o]));
  let cur = byId.get(id);
  if (!cur) return -1;
  let d = 0;
  const seen = new Set<string>([id]);
  while (cur.parent && byId.has(cur.parent) && !seen.has(cur.parent)) {
    seen.add(cur.parent);
    cur = byId.get(cur.parent)!;
    d += 1;
  }
  return d;
}

/** The level an organisation is at: a root is the city, then counties, then units. */
export function levelOfOrg(orgs: readonly Org[], id: string): Level {
  const d = orgDepth(orgs, id);
  if (d <= 0) return "city";
  return d === 1 ? "county" : "unit";
}

/**
 * The level of the rows shown under organisation `id`: its children's level when it has
 * children, its vehicles when it has none (a county with no units lists its vehicles).
 */
export function childLevel(orgs: readonly Org[], id: string): Level {
  const hasKids = orgs.some((o) => o.parent === id && o.id !== id);
  if (!hasKids) return "vehicle";
  // Below a unit come its vehicles (the server's units are the leaves; a unit asked at its own
  // level is one row, itself).
  return nextLevel(levelOfOrg(orgs, id)) ?? "vehicle";
}

/** The chain of organisations from the root down to `id` (inclusive), within what is known. */
export function orgChain(orgs: readonly Org[], id: string): Org[] {
  const byId = new Map(orgs.map((o) => [o.id, o]));
  const out: Org[] = [];
  const seen = new Set<string>();
  let cur = byId.get(id);
  while (cur && !seen.has(cur.id)) {
    out.unshift(cur);
    seen.add(cur.id);
    cur = cur.parent ? byId.get(cur.parent) : undefined;
  }
  return out;
}

// -- the drill-down path --------------------------------------------------------------------

/** One step of the breadcrumb: the rows of `level` under `org`. */
export interface Crumb {
  org: string;
  name: string;
  level: Level;
  /** A "本级" row opened: the vehicles the organisation holds itself (the server's own=true). */
  own?: boolean;
}

/** The path when the page opens on organisation `org` (the user's own or the filter's). */
export function startPath(orgs: readonly Org[], org: string): Crumb[] {
  const o = orgs.find((x) => x.id === org);
  return [{ org, name: o?.name ?? org, level: childLevel(orgs, org) }];
}

/**
 * The path after clicking a row: null when the row cannot be opened (a vehicle row, a row with
 * no org, the org already on the path, or vehicles of a report that has no vehicle level — 编制).
 * The level comes from the tree when the org is in it, else from the server's children_level.
 */
export function drillInto(
  path: readonly Crumb[],
  row: { org?: unknown; name?: unknown; vehicle?: unknown; own?: unknown },
  orgs: readonly Org[],
  childrenLevel: string | null | undefined,
  vehicleLevel = true,
): Crumb[] | null {
  const here = path[path.length - 1];
  if (!here || here.level === "vehicle") return null;
  if (typeof row.org !== "string" || !row.org || (row.vehicle != null && row.vehicle !== "")) return null;
  if (row.own === true) {
    // A 本级 row (an organisation above this level holding vehicles itself): its vehicles.
    if (!vehicleLevel) return null;
    const name = typeof row.name === "string" && row.name ? row.name : row.org;
    return [...path, { org: row.org, name, level: "vehicle", own: true }];
  }
  if (path.some((c) => c.org === row.org)) return null;
  const known = orgs.some((o) => o.id === row.org);
  let level: Level | null;
  if (known) level = childLevel(orgs, row.org);
  else level = isLevel(childrenLevel) ? childrenLevel : nextLevel(here.level);
  if (!level || (level === "vehicle" && !vehicleLevel)) return null;
  const name = typeof row.name === "string" && row.name ? row.name : row.org;
  return [...path, { org: row.org, name, level }];
}

/** Whether a row of this table opens a level below. */
export function canDrill(
  path: readonly Crumb[],
  row: { org?: unknown; vehicle?: unknown; own?: unknown },
  orgs: readonly Org[],
  vehicleLevel = true,
): boolean {
  return drillInto(path, row, orgs, null, vehicleLevel) !== null;
}

/** Reports without a vehicle level (the server refuses level=vehicle for them). */
export const NO_VEHICLE_LEVEL: readonly ReportName[] = ["quota"];

/** Back up to the crumb at `index` (the rest of the path drops); out of range keeps the path. */
export function backTo(path: readonly Crumb[], index: number): Crumb[] {
  if (!Number.isInteger(index) || index < 0 || index >= path.length) return [...path];
  return path.slice(0, index + 1);
}

/** The path in the address (?path=ga,ga-ws,ga-ws-x; a 本级 step ends in "~"), and back. */
export function pathToQuery(path: readonly Crumb[]): string {
  return path.map((c) => (c.own ? `${c.org}~` : c.org)).join(",");
}

export function pathFromQuery(text: string, orgs: readonly Org[], vehicleLevel = true): Crumb[] | null {
  const steps = text.split(",").filter(Boolean);
  const ids = steps.map((s) => s.replace(/~$/, ""));
  if (!ids.length || steps[0].endsWith("~") || !ids.every((id) => orgs.some((o) => o.id === id))) return null;
  let path = startPath(orgs, ids[0]);
  for (const [i, id] of ids.entries()) {
    if (i === 0) continue;
    const o = orgs.find((x) => x.id === id)!;
    const own = steps[i].endsWith("~");
    const row = { org: o.id, name: own ? `${o.name}（本级）` : o.name, own };
    const next = drillInto(path, row, orgs, null, vehicleLevel);
    if (!next) return null;
    path = next;
  }
  return path;
}

// -- dates and queries ----------------------------------------------------------------------

const DAY_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
const MONTH_RE = /^(\d{4})-(\d{2})$/;
/** The longest range a report asks for (a year and a day). */
export const MAX_REPORT_DAYS = 366;

function validDay(s: string): boolean {
  const m = DAY_RE.exec(s);
  if (!m) return false;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3]));
  return d.getUTCFullYear() === +m[1] && d.getUTCMonth() === +m[2] - 1 && d.getUTCDate() === +m[3];
}

function dayNumber(s: string): number {
  const m = DAY_RE.exec(s)!;
  return Date.UTC(+m[1], +m[2] - 1, +m[3]) / 86_400_000;
}

function isoOfDayNumber(n: number): string {
  return new Date(n * 86_400_000).toISOString().slice(0, 10);
}

/** The first and last day of a month "YYYY-MM"; throws on a text that is not a month. */
export function monthRange(month: string): [string, string] {
  const m = MONTH_RE.exec(month);
  if (!m || +m[2] < 1 || +m[2] > 12) throw new Error(`not a month: ${month}`);
  const last = new Date(Date.UTC(+m[1], +m[2], 0)).getUTCDate();
  return [`${m[1]}-${m[2]}-01`, `${m[1]}-${m[2]}-${String(last).padStart(2, "0")}`];
}

/** The month before the one of `today` ("YYYY-MM-DD") as "YYYY-MM": the report the office sends. */
export function lastMonth(today: string): string {
  const m = DAY_RE.exec(today);
  if (!m) throw new Error(`not a day: ${today}`);
  let y = +m[1];
  let mo = +m[2] - 1;
  if (mo === 0) {
    y -= 1;
    mo = 12;
  }
  return `${y}-${String(mo).padStart(2, "0")}`;
}

/** The month of `today` from its 1st up to `today`. */
export function monthToDate(today: string): [string, string] {
  return [`${today.slice(0, 8)}01`, today];
}

export type DateProblem = "missing" | "badDay" | "badOrder" | "tooLong" | null;

/** Why a from/to pair cannot be asked for, or null (both days inclusive). */
export function dateProblem(from: string | null | undefined, to: string | null | undefined, maxDays = MAX_REPORT_DAYS): DateProblem {
  if (!from || !to) return "missing";
  if (!validDay(from) || !validDay(to)) return "badDay";
  const a = dayNumber(from);
  const b = dayNumber(to);
  if (b < a) return "badOrder";
  if (b - a + 1 > maxDays) return "tooLong";
  return null;
}

/** Number of days from..to inclusive (0 when the range is not valid). */
export function daysIn(from: string, to: string): number {
  if (dateProblem(from, to, Infinity)) return 0;
  return dayNumber(to) - dayNumber(from) + 1;
}

/** The day after `day`. */
export function nextDay(day: string): string {
  return isoOfDayNumber(dayNumber(day) + 1);
}

export interface ReportFilter {
  org: string;
  from: string;
  to: string;
  level?: Level;
  /** violations: only this kind in the list behind the counts ("items"). */
  kind?: string | null;
  /** A 本级 step: only the vehicles booked on `org` itself (the server's own=1). */
  own?: boolean;
}

/** The query of GET /api/reports/{name}: the same filters for the table and its exports. */
export function reportQuery(
  f: ReportFilter,
  format: "json" | "csv" | "xlsx" = "json",
  lang: "zh" | "en" = "zh",
): URLSearchParams {
  const q = new URLSearchParams();
  if (f.org) q.set("org", f.org);
  q.set("from", f.from);
  q.set("to", f.to);
  if (f.level) q.set("level", f.level);
  if (f.kind) q.set("kind", f.kind);
  if (f.own) q.set("own", "1");
  if (format !== "json") q.set("format", format);
  // A file's headers in the page's language (Chinese unless asked).
  if (format !== "json" && lang === "en") q.set("lang", "en");
  return q;
}

export function reportPath(
  name: ReportName,
  f: ReportFilter,
  format: "json" | "csv" | "xlsx" = "json",
  lang: "zh" | "en" = "zh",
): string {
  return `/api/reports/${name}?${reportQuery(f, format, lang)}`;
}

/** The file name of an export: 违规统计_广安市_2026-11-01_2026-11-30.xlsx (no path characters). */
export function reportFileName(title: string, orgName: string, f: ReportFilter, format: "csv" | "xlsx"): string {
  const clean = (s: string) => s.replace(/[\\/:*?"<>|\s]+/g, "_");
  return `${clean(title)}_${clean(orgName)}_${f.from}_${f.to}.${format}`;
}

/**
 * The alarm history behind a violation count: organisation (or the vehicle's plate), kind, and
 * the report's days in the fleet's zone as the history page's from/to (epoch ms, end exclusive).
 */
export function alarmHistoryQuery(
  cell: { org?: string; plate?: string; kind?: string | null; severity?: string | null },
  from: string,
  to: string,
  zone: string,
): Record<string, string> {
  const q: Record<string, string> = {
    from: String(dayStartMs(from, zone)),
    to: String(dayStartMs(nextDay(to), zone)),
  };
  if (cell.org) q.org = cell.org;
  if (cell.plate) q.plate = cell.plate;
  if (cell.kind) q.kind = cell.kind;
  if (cell.severity) q.severity = cell.severity;
  return q;
}

/** The query of GET /api/board/summary. */
export function boardQuery(org: string | null | undefined, date?: string | null): URLSearchParams {
  const q = new URLSearchParams();
  if (org) q.set("org", org);
  if (date) q.set("date", date);
  return q;
}

// -- figures --------------------------------------------------------------------------------

export type FigureKind = "int" | "float" | "km" | "pct" | "duration" | "text";

export interface Column {
  key: string;
  zh: string;
  en: string;
  /** Optional hint from the server; without it the key decides (figureKind). */
  type?: string;
}

/** How a column's figures are written, from the server's hint or the key's usual suffixes. */
export function figureKind(col: Pick<Column, "key" | "type">): FigureKind {
  const t = (col.type ?? "").toLowerCase();
  if (t === "int" || t === "integer" || t === "count") return "int";
  if (t === "float" || t === "number" || t === "decimal") return "float";
  if (t === "km") return "km";
  if (t === "pct" || t === "percent" || t === "share" || t === "rate") return "pct";
  if (t === "duration" || t === "seconds" || t === "s") return "duration";
  if (t === "text" || t === "str" || t === "string") return "text";
  const k = col.key.toLowerCase();
  if (["org", "name", "vehicle", "plate", "unit", "county", "city", "month", "kind", "driver"].includes(k)) return "text";
  if (/(_share|_rate|_pct|_ratio|share|rate|coverage)$/.test(k)) return "pct";
  if (/(_s|_sec|_seconds)$/.test(k)) return "duration";
  if (/(^|_)km$/.test(k)) return "km";
  return "int";
}

/** Thousands separated by commas, `digits` decimals. */
function grouped(v: number, digits: number): string {
  const s = Math.abs(v).toFixed(digits);
  const [int, frac] = s.split(".");
  const g = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (v < 0 && Number(s) !== 0 ? "-" : "") + g + (frac ? `.${frac}` : "");
}

export interface DurationUnits {
  h: string;
  min: string;
  s: string;
}

/** A duration in seconds as "1 小时 5 分钟", "4 分钟 10 秒", "25 秒". */
export function formatSeconds(sec: number, u: DurationUnits): string {
  const s = Math.round(Math.max(0, sec));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return m ? `${h} ${u.h} ${m} ${u.min}` : `${h} ${u.h}`;
  if (m) return r ? `${m} ${u.min} ${r} ${u.s}` : `${m} ${u.min}`;
  return `${r} ${u.s}`;
}

/**
 * A figure as the table, the tiles and the charts' labels show it: null/undefined/NaN "—",
 * counts grouped ("12,345"), km with one decimal, shares (0..1) as "93.5%", durations in words.
 */
export function formatFigure(v: unknown, kind: FigureKind, u: DurationUnits = { h: "h", min: "min", s: "s" }): string {
  if (v === null || v === undefined || v === "") return "—";
  if (kind === "text") return String(v);
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isFinite(n)) return typeof v === "string" ? v : "—";
  switch (kind) {
    case "int":
      return Number.isInteger(n) ? grouped(n, 0) : grouped(n, 1);
    case "float":
      return grouped(n, 1);
    case "km":
      return grouped(n, 1);
    case "pct":
      return `${(n * 100).toFixed(1)}%`;
    case "duration":
      return formatSeconds(n, u);
  }
}

/** The column a report's chart draws: the server's preferred one, else the first figure. */
const CHART_KEYS: Record<ReportName, string[]> = {
  violations: ["total", "alarms", "violations", "count"],
  use: ["trips", "km", "hours"],
  handling: ["acked_10min_rate", "handled_10min_rate", "ack_avg_min"],
  online: ["online_rate", "online_share", "rate"],
  coverage: ["coverage_rate", "coverage", "trips_covered"],
  quota: ["actual", "authorised", "over"],
};

export function chartColumn(name: ReportName, cols: readonly Column[], rows: readonly Record<string, unknown>[]): Column | null {
  const numeric = cols.filter(
    (c) => figureKind(c) !== "text" && rows.some((r) => typeof r[c.key] === "number"),
  );
  for (const k of CHART_KEYS[name] ?? []) {
    const c = numeric.find((x) => x.key === k);
    if (c) return c;
  }
  return numeric[0] ?? null;
}

/** The alarm kind a violations column counts (null for the total, the name, the org…). */
export function violationKind(col: Pick<Column, "key">, kinds: readonly string[]): string | null {
  if (kinds.includes(col.key)) return col.key;
  const m = /^(?:kind_|alarms_)(.+)$/.exec(col.key);
  return m && kinds.includes(m[1]) ? m[1] : null;
}

/** The severity a violations column counts (严重 → critical), or null. */
export function violationSeverity(col: Pick<Column, "key">): string | null {
  return col.key === "critical" ? "critical" : null;
}

/** Whether a violations cell opens the list behind it: a kind, 严重 or the total, above 0. */
export function violationLink(col: Pick<Column, "key">, value: unknown, kinds: readonly string[]): boolean {
  if (typeof value !== "number" || value <= 0) return false;
  return (
    violationKind(col, kinds) !== null ||
    violationSeverity(col) !== null ||
    ["total", "alarms", "violations", "count"].includes(col.key)
  );
}

/** One episode behind a violation count (the violations report's "items"). */
export interface ViolationItem {
  alarm_id: string;
  vehicle_id: string;
  org: string;
  kind: string;
  severity: string;
  started_at: number;
  ack_s: number | null;
  handle_s: number | null;
  plate?: string;
  day?: string;
}

/** The items of one cell: the row's vehicle (a vehicle row), the column's kind or severity. */
export function itemsOfCell(
  items: readonly ViolationItem[],
  cell: { vehicle?: string | null; kind?: string | null; severity?: string | null },
): ViolationItem[] {
  return items.filter(
    (a) =>
      (!cell.vehicle || a.vehicle_id === cell.vehicle) &&
      (!cell.kind || a.kind === cell.kind) &&
      (!cell.severity || a.severity === cell.severity),
  );
}

// -- the board ------------------------------------------------------------------------------

/** The 运行费用 tile: the month's costs so far in whole yuan (grouped), "—" when the server
 *  has none (null: no costs recorded, or a server without them), and the month it counts
 *  (YYYY-MM of the board's day) for the link to 运行费用. */
export function costsTile(costs: unknown, day: string | null | undefined): { value: string; known: boolean; month: string | null } {
  const n = typeof costs === "number" && Number.isFinite(costs) ? costs : null;
  const month = day && /^\d{4}-\d{2}/.test(day) ? day.slice(0, 7) : null;
  return { value: n === null ? "—" : grouped(Math.round(n), 0), known: n !== null, month };
}

export interface BoardToday {
  quota: number | null;
  actual: number | null;
  online: number | null;
  trips: number | null;
  alarms: number | null;
  costs: number | null;
  km?: number | null;
}

export interface TrendPoint {
  date: string;
  trips: number;
  km: number;
  alarms: number;
}

export interface AttentionRow {
  org: string;
  name: string;
  value: number | null;
}

export interface IdleRow {
  vehicle: string;
  plate: string;
  org: string;
  /** Days since the last trip (null: none in the rollup). */
  days: number | null;
  last: string | null;
}

export interface BoardSummary {
  org: string;
  date: string;
  today: BoardToday;
  trend7: TrendPoint[];
  trend30: TrendPoint[];
  alarmsByKind: [string, number][];
  attention: { violations: AttentionRow[]; slow_handling: AttentionRow[]; low_online: AttentionRow[] };
  idle: IdleRow[];
  /** "Idle" means no trip in this many days. */
  idleDays: number | null;
}

const numOrNull = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const str = (v: unknown): string => (v == null ? "" : String(v));

/** Value keys in order of preference, each with the factor to the board's unit. */
function attentionRows(v: unknown, valueKeys: [string, number][]): AttentionRow[] {
  if (!Array.isArray(v)) return [];
  return v.map((r: Record<string, unknown>) => {
    let value: number | null = null;
    for (const [k, factor] of [...valueKeys, ["value", 1] as [string, number]]) {
      if (typeof r[k] === "number") {
        value = (r[k] as number) * factor;
        break;
      }
    }
    return { org: str(r.org), name: str(r.name ?? r.org), value };
  });
}

/**
 * The board's figures from GET /api/board/summary, whichever of the contract's two readings
 * the server takes (today's figures at the top or under "today"; lists of rows or of pairs).
 */
export function normalizeSummary(raw: Record<string, unknown>): BoardSummary {
  const t = (raw.today && typeof raw.today === "object" ? raw.today : raw) as Record<string, unknown>;
  const alarmsV = t.alarms;
  const alarms = typeof alarmsV === "number" ? alarmsV : numOrNull((alarmsV as Record<string, unknown> | null)?.total);
  const trend = (v: unknown): TrendPoint[] =>
    Array.isArray(v)
      ? v.map((p: Record<string, unknown>) => ({
          date: str(p.date),
          trips: numOrNull(p.trips) ?? 0,
          km: numOrNull(p.km) ?? 0,
          alarms: numOrNull(p.alarms) ?? 0,
        }))
      : [];
  const byKindRaw = raw.alarms_by_kind;
  let byKind: [string, number][] = [];
  if (Array.isArray(byKindRaw)) {
    byKind = byKindRaw.map((r: Record<string, unknown>) => [str(r.kind), numOrNull(r.count ?? r.n ?? r.value) ?? 0]);
  } else if (byKindRaw && typeof byKindRaw === "object") {
    byKind = Object.entries(byKindRaw as Record<string, unknown>).map(([k, n]) => [k, numOrNull(n) ?? 0]);
  }
  byKind = byKind.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const att = (raw.attention ?? {}) as Record<string, unknown>;
  const date = str(raw.date ?? raw.day);
  const idle = Array.isArray(raw.idle)
    ? raw.idle.map((r: Record<string, unknown>) => {
        const lastV = r.last_trip_day ?? r.last_trip ?? r.last;
        const last = lastV != null && lastV !== "" ? str(lastV) : null;
        let days = numOrNull(r.days ?? r.idle_days);
        if (days == null && last && validDay(last) && validDay(date)) days = dayNumber(date) - dayNumber(last);
        return {
          vehicle: str(r.vehicle ?? r.id),
          plate: str(r.plate ?? r.name ?? r.vehicle),
          org: str(r.org),
          days,
          last,
        };
      })
    : [];
  return {
    org: str(raw.org),
    date,
    today: {
      quota: numOrNull(t.quota),
      actual: numOrNull(t.actual),
      online: numOrNull(t.online),
      trips: numOrNull(t.trips),
      alarms,
      costs: numOrNull(t.costs),
      km: numOrNull(t.km),
    },
    trend7: trend(raw.trend7),
    trend30: trend(raw.trend30),
    alarmsByKind: byKind,
    attention: {
      violations: attentionRows(att.violations, [["violations", 1], ["alarms", 1], ["total", 1], ["count", 1]]),
      // The board shows seconds; the server gives the mean time to acknowledge in minutes.
      slow_handling: attentionRows(att.slow_handling, [["ack_avg_min", 60], ["ack_avg_s", 1], ["ack_s", 1]]),
      low_online: attentionRows(att.low_online, [["online_rate", 1], ["online_share", 1], ["rate", 1]]),
    },
    idle,
    idleDays: numOrNull(raw.idle_days),
  };
}

// -- the wall screen ------------------------------------------------------------------------

export const BOARD_PANELS = ["trend", "kinds", "attention", "idle"] as const;
export type BoardPanel = (typeof BOARD_PANELS)[number];
export const DEFAULT_ROTATE_S = 10;
/** A wall screen turns no faster than every 3 s and no slower than every 10 minutes. */
export const MIN_ROTATE_S = 3;
export const MAX_ROTATE_S = 600;

/** ?rotate=N seconds, clamped; the default for anything that is not a number. */
export function rotateSeconds(v: unknown): number {
  const n = Number(Array.isArray(v) ? v[0] : v);
  if (v == null || v === "" || !Number.isFinite(n)) return DEFAULT_ROTATE_S;
  return Math.min(MAX_ROTATE_S, Math.max(MIN_ROTATE_S, Math.round(n)));
}

export interface RotationState<P> {
  panel: P;
  index: number;
  /** Milliseconds until the next panel. */
  nextInMs: number;
}

/** The panel shown `elapsedMs` after the wall screen started, and when it changes. */
export function rotationAt<P>(panels: readonly P[], elapsedMs: number, rotateS: number): RotationState<P> {
  if (!panels.length) throw new Error("no panels to rotate");
  const period = Math.max(1, rotateS) * 1000;
  const e = Math.max(0, elapsedMs);
  const step = Math.floor(e / period);
  const index = step % panels.length;
  return { panel: panels[index], index, nextInMs: period - (e - step * period) };
}

/** ?screen=1 in the hash route's query or in the page's own query turns the wall screen on. */
export function screenRequested(routeQuery: Record<string, unknown>, search: string): boolean {
  const on = (v: unknown) => v === "1" || v === "true";
  return on(routeQuery.screen) || on(new URLSearchParams(search).get("screen"));
}
