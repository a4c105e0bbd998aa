// Times are shown in the fleet's time zone (service.timezone from /api/me), whatever the
// browser's zone is: YYYY-MM-DD HH:mm:ss, dates YYYY-MM-DD. Pure functions, zone passed in.

export const DEFAULT_ZONE = "Asia/Shanghai";

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone,
      hourCycle: "h23",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
    });
    formatters.set(zone, f);
  }
  return f;
}

export interface ZonedParts {
  year: string;
  month: string;
  day: string;
  hour: string;
  minute: string;
  second: string;
}

export function zonedParts(ms: number, zone: string = DEFAULT_ZONE): ZonedParts {
  const o: Record<string, string> = {};
  for (const p of formatter(zone).formatToParts(new Date(ms))) o[p.type] = p.value;
  return { year: o.year, month: o.month, day: o.day, hour: o.hour, minute: o.minute, second: o.second };
}

/** 2026-11-25 09:30:00 in the fleet's zone; "—" for a missing time. */
export function formatTime(ms: number | null | undefined, zone: string = DEFAULT_ZONE): string {
  if (ms == null || !Number.isFinite(ms)) return "—";
  const o = zonedParts(ms, zone);
  return `${o.year}-${o.month}-${o.day} ${o.hour}:${o.minute}:${o.second}`;
}

/** 2026-11-25 in the fleet's zone. */
export function formatDay(ms: number, zone: string = DEFAULT_ZONE): string {
  const o = zonedParts(ms, zone);
  return `${o.year}-${o.month}-${o.day}`;
}

/** Epoch ms of 00:00 of an ISO day (YYYY-MM-DD) in the zone. */
export function dayStartMs(iso: string, zone: string = DEFAULT_ZONE): number {
  const guess = Date.parse(`${iso}T00:00:00Z`);
  if (Number.isNaN(guess)) throw new Error(`not a day: ${iso}`);
  const o = zonedParts(guess, zone);
  const shown = Date.UTC(+o.year, +o.month - 1, +o.day, +o.hour, +o.minute, +o.second);
  return guess - (shown - guess);
}

/** Epoch ms of a wall-clock time "YYYY-MM-DD HH:mm[:ss]" in the zone. */
export function zonedToMs(text: string, zone: string = DEFAULT_ZONE): number {
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text.trim());
  if (!m) throw new Error(`not a time: ${text}`);
  return dayStartMs(m[1], zone) + ((+m[2] * 60 + +m[3]) * 60 + +(m[4] ?? 0)) * 1000;
}

export interface Span {
  h: number;
  min: number;
  s: number;
}

export function splitDuration(ms: number): Span {
  const total = Math.max(0, Math.floor(ms / 1000));
  return { h: Math.floor(total / 3600), min: Math.floor((total % 3600) / 60), s: total % 60 };
}

/** "1 小时 5 分钟", "3 分钟 20 秒", "45 秒" — units come from the caller (i18n). */
export function formatDuration(ms: number, unit: { h: string; min: string; s: string }): string {
  const d = splitDuration(ms);
  if (d.h > 0) return `${d.h} ${unit.h} ${d.min} ${unit.min}`;
  if (d.min > 0) return `${d.min} ${unit.min} ${d.s} ${unit.s}`;
  return `${d.s} ${unit.s}`;
}

export type AgeBucket =
  | { unit: "justNow"; n: 0 }
  | { unit: "minutesAgo" | "hoursAgo" | "daysAgo"; n: number };

/** How old a last report is, for 最后更新 N 分钟前. */
export function ageBucket(ts: number, now: number): AgeBucket {
  const s = Math.max(0, (now - ts) / 1000);
  if (s < 60) return { unit: "justNow", n: 0 };
  if (s < 3600) return { unit: "minutesAgo", n: Math.floor(s / 60) };
  if (s < 86400) return { unit: "hoursAgo", n: Math.floor(s / 3600) };
  return { unit: "daysAgo", n: Math.floor(s / 86400) };
}
