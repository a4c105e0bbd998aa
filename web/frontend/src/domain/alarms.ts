// What the desk knows about an alarm: its severity, its place in the list, the facts on its
// card. Pure functions over the alarm objects of the feed and the API (CONTRACTS.md).
import type { Alarm, Severity } from "@/api/types";

export const SEVERITIES: readonly Severity[] = ["critical", "warning", "info"];
const RANK: Record<Severity, number> = { critical: 0, warning: 1, info: 2 };

/** Terminal alarm names that are critical by themselves (rules.terminal_alarm.critical). */
export const CRITICAL_TERMINAL = new Set(["sos", "collision", "rollover"]);
/** Kinds that are critical whatever their detail says (a sealed vehicle moving). */
export const CRITICAL_KINDS = new Set(["sealed_moving"]);

// JT/T 808-2019 table 24 (alarm flags): the names the rules use → bit number.
export const TERMINAL_BITS: Record<string, number> = {
  sos: 0,
  overspeed: 1,
  fatigue: 2,
  danger_warning: 3,
  gnss_fault: 4,
  gnss_antenna_cut: 5,
  gnss_antenna_short: 6,
  power_low: 7,
  power_cut: 8,
  lcd_fault: 9,
  tts_fault: 10,
  camera_fault: 11,
  ic_card_fault: 12,
  overspeed_warning: 13,
  fatigue_warning: 14,
  driving_overtime_today: 18,
  parking_overtime: 19,
  area_in_out: 20,
  route_in_out: 21,
  route_time: 22,
  route_deviation: 23,
  vss_fault: 24,
  fuel_abnormal: 25,
  theft: 26,
  illegal_ignition: 27,
  illegal_displacement: 28,
  collision: 29,
  rollover: 30,
  illegal_door_open: 31,
};

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}
function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** The terminal alarm's sub-name: detail.name, else the id's sub-key (terminal_alarm.sos). */
export function terminalName(a: Alarm): string | undefined {
  if (a.kind !== "terminal_alarm") return undefined;
  const fromDetail = str(a.detail?.name);
  if (fromDetail) return fromDetail;
  const m = /terminal_alarm[./]([A-Za-z0-9_]+)/.exec(a.id);
  return m ? m[1] : undefined;
}

/** The JT/T 808 bit number of a terminal alarm, when known. */
export function terminalBit(a: Alarm): number | undefined {
  const b = num(a.detail?.bit);
  if (b !== undefined) return b;
  const name = terminalName(a);
  return name !== undefined ? TERMINAL_BITS[name] : undefined;
}

/** Severity: the alarm's own field first (CONTRACTS.md), then detail.severity, then derived. */
export function severityOf(a: Alarm): Severity {
  const own = a.severity ?? (a.detail?.severity as Severity | undefined);
  if (own === "critical" || own === "warning" || own === "info") return own;
  if (CRITICAL_KINDS.has(a.kind)) return "critical";
  const name = terminalName(a);
  if (name !== undefined && CRITICAL_TERMINAL.has(name)) return "critical";
  return "warning";
}

export function isAcknowledged(a: Alarm): boolean {
  return a.ack != null || (a.acks?.some((x) => x.action !== "note") ?? false);
}

/**
 * Desk order: critical first, then warning, then info; within a severity the unacknowledged
 * before the acknowledged, open before closed, newest first. Ties broken by id so the order is
 * stable between renders.
 */
export function compareAlarms(a: Alarm, b: Alarm): number {
  return (
    RANK[severityOf(a)] - RANK[severityOf(b)] ||
    Number(isAcknowledged(a)) - Number(isAcknowledged(b)) ||
    Number(a.state === "closed") - Number(b.state === "closed") ||
    b.started_at - a.started_at ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

export function sortAlarms(list: Iterable<Alarm>): Alarm[] {
  return Array.from(list).sort(compareAlarms);
}

/** Measured vs limit for speeding: [103, 80] (km/h), when the detail carries both. */
export function measuredVsLimit(a: Alarm): [number, number] | undefined {
  const d = a.detail ?? {};
  const measured = num(d.max_speed_kmh) ?? num(d.speed_kmh) ?? num(d.speed);
  const limit = num(d.limit_kmh);
  if (measured === undefined || limit === undefined) return undefined;
  return [Math.round(measured), Math.round(limit)];
}

/** The fence or banned place's name (detail.fence_name; older rows carry only the id). */
export function fenceName(a: Alarm): string | undefined {
  return str(a.detail?.fence_name) ?? str(a.detail?.fence);
}

/** How long the episode has lasted (or lasted): ms. */
export function durationMs(a: Alarm, now: number): number {
  return Math.max(0, (a.ended_at ?? now) - a.started_at);
}

/** The phone to call: the alarm's own (feed), else the detail's contact. */
export function contactPhone(a: Alarm): string | undefined {
  return str(a.phone) ?? str(a.detail?.phone) ?? str(a.detail?.contact_phone);
}

/** A phone number as a tel: href, keeping only digits and a leading +. */
export function telHref(phone: string): string {
  const clean = phone.replace(/[^\d+]/g, "").replace(/(?!^)\+/g, "");
  return `tel:${clean}`;
}

/** Coordinates as the fallback place text. */
export function coordText(lat: number, lon: number): string {
  return `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}

/** Unacknowledged alarms that still need the operator (for the tab title and the reminder). */
export function unacknowledged(list: Iterable<Alarm>): Alarm[] {
  return Array.from(list).filter((a) => !isAcknowledged(a));
}

/** Merge one alarm frame into the desk: closed and acknowledged alarms leave it. */
export function applyAlarm(desk: Map<string, Alarm>, a: Alarm): "added" | "updated" | "removed" {
  const known = desk.has(a.id);
  if (a.state === "closed" && isAcknowledged(a)) {
    desk.delete(a.id);
    return "removed";
  }
  desk.set(a.id, a);
  return known ? "updated" : "added";
}
