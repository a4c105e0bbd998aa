// The playback clock and the position at a time on a track (pure: time passed in). The clock
// runs in track time: each animation frame moves it by the wall-clock time elapsed × the speed
// factor, so a day plays in the same wall time whatever the number of points.
import type { Alarm } from "@/api/types";

export interface TrackColumns {
  ts: number[];
  lat: number[];
  lon: number[];
  speed: number[];
  heading?: number[];
  acc?: boolean[];
}

export interface Stop {
  start: number;
  end: number;
  lat: number;
  lon: number;
  duration_s: number;
  place?: string;
}

export interface Trip {
  start: number;
  end: number;
  km: number;
  max_speed_kmh: number;
}

/** GET /api/vehicles/{id}/track (CONTRACTS.md; stops, trips, limit_kmh when the server has them). */
export interface TrackResponse {
  vehicle: string;
  from: number;
  to: number;
  points: TrackColumns;
  alarms: Alarm[];
  stops?: Stop[];
  trips?: Trip[];
  limit_kmh?: number | null;
}

/** Speed factors offered (× real time). */
export const SPEEDS: readonly number[] = [10, 60, 300, 900, 3600];
/** Wall seconds a whole range should take at the default factor. */
export const TARGET_PLAY_S = 60;

/** The offered factor that plays `rangeMs` in about TARGET_PLAY_S seconds. */
export function defaultSpeed(rangeMs: number): number {
  const want = rangeMs / 1000 / TARGET_PLAY_S;
  let best = SPEEDS[0];
  for (const s of SPEEDS) if (Math.abs(Math.log(s / want)) < Math.abs(Math.log(best / want))) best = s;
  return best;
}

/** Index of the last point at or before `t` (-1 before the first). Binary search. */
export function indexAt(ts: readonly number[], t: number): number {
  let lo = 0;
  let hi = ts.length - 1;
  if (hi < 0 || t < ts[0]) return -1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (ts[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

export interface At {
  /** Index of the point at or before t (clamped to the track). */
  i: number;
  lat: number;
  lon: number;
  speed: number;
  ts: number;
}

/** Longest gap between two points bridged by a straight line; a longer one holds the marker. */
export const MAX_INTERPOLATE_MS = 5 * 60_000;

/** Where the vehicle is at `t`: between two points close in time, on the line between them. */
export function positionAt(tr: TrackColumns, t: number): At | null {
  const n = tr.ts.length;
  if (n === 0) return null;
  const i = Math.max(0, indexAt(tr.ts, t));
  const j = i + 1;
  if (t <= tr.ts[0] || j >= n || tr.ts[j] - tr.ts[i] > MAX_INTERPOLATE_MS) {
    return { i, lat: tr.lat[i], lon: tr.lon[i], speed: tr.speed[i], ts: tr.ts[i] };
  }
  const f = (t - tr.ts[i]) / (tr.ts[j] - tr.ts[i]);
  return {
    i,
    lat: tr.lat[i] + (tr.lat[j] - tr.lat[i]) * f,
    lon: tr.lon[i] + (tr.lon[j] - tr.lon[i]) * f,
    speed: tr.speed[i] + (tr.speed[j] - tr.speed[i]) * f,
    ts: t,
  };
}

export interface Clock {
  /** Track time shown, epoch ms. */
  t: number;
  playing: boolean;
  /** × real time. */
  speed: number;
  from: number;
  to: number;
}

export function newClock(from: number, to: number): Clock {
  return { t: from, playing: false, speed: defaultSpeed(to - from), from, to };
}

/** The clock after `wallMs` of wall time; it stops at the end. */
export function tick(c: Clock, wallMs: number): Clock {
  if (!c.playing) return c;
  const t = c.t + Math.max(0, wallMs) * c.speed;
  if (t >= c.to) return { ...c, t: c.to, playing: false };
  return { ...c, t };
}

/** Play (from the start again when at the end) or pause. */
export function toggle(c: Clock): Clock {
  if (c.playing) return { ...c, playing: false };
  return { ...c, playing: true, t: c.t >= c.to ? c.from : c.t };
}

/** Move to a time (slider, chart, stop list), inside the range. */
export function seek(c: Clock, t: number): Clock {
  return { ...c, t: Math.min(c.to, Math.max(c.from, t)) };
}
