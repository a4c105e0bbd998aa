import { describe, expect, it } from "vitest";
import {
  defaultSpeed,
  indexAt,
  MAX_INTERPOLATE_MS,
  newClock,
  positionAt,
  seek,
  tick,
  toggle,
  type TrackColumns,
} from "@/views/parts/playback";
import { alarmBands, axisLabel, speedSeries } from "@/views/parts/speedChart";
import type { Alarm } from "@/api/types";

const T0 = Date.UTC(2026, 10, 24, 16, 0); // 2026-11-25 00:00 +08:00
const DAY = 86_400_000;

function track(ts: number[]): TrackColumns {
  return { ts, lat: ts.map((_, i) => 30 + i * 0.01), lon: ts.map((_, i) => 106 + i * 0.01), speed: ts.map((_, i) => i * 10) };
}

describe("the point at a time", () => {
  it("finds the last point at or before t, by binary search", () => {
    const ts = [10, 20, 20, 30, 50];
    expect(indexAt(ts, 5)).toBe(-1);
    expect(indexAt(ts, 10)).toBe(0);
    expect(indexAt(ts, 20)).toBe(2);
    expect(indexAt(ts, 29)).toBe(2);
    expect(indexAt(ts, 1000)).toBe(4);
    expect(indexAt([], 1)).toBe(-1);
  });
  it("agrees with a linear scan on random tracks", () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let k = 0; k < 200; k++) {
      const ts = Array.from({ length: 1 + Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 1000)).sort((a, b) => a - b);
      const t = Math.floor(rnd() * 1100) - 50;
      let want = -1;
      for (let i = 0; i < ts.length; i++) if (ts[i] <= t) want = i;
      expect(indexAt(ts, t)).toBe(want);
    }
  });
  it("moves along the line between two close points, and holds over a long silence", () => {
    const tr = track([T0, T0 + 10_000, T0 + 10_000 + MAX_INTERPOLATE_MS + 1]);
    const mid = positionAt(tr, T0 + 5_000)!;
    expect(mid.i).toBe(0);
    expect(mid.lat).toBeCloseTo(30.005, 9);
    expect(mid.speed).toBeCloseTo(5, 9);
    const gap = positionAt(tr, T0 + 60_000)!;
    expect([gap.lat, gap.lon, gap.i]).toEqual([tr.lat[1], tr.lon[1], 1]);
    expect(positionAt(tr, T0 - 1)!.i).toBe(0);
    expect(positionAt(tr, T0 + 10 * DAY)!.i).toBe(2);
    expect(positionAt(track([]), T0)).toBeNull();
  });
});

describe("the playback clock", () => {
  it("runs in track time: wall time × the factor, and stops at the end", () => {
    let c = toggle({ ...newClock(T0, T0 + DAY), speed: 600 });
    expect(c.playing).toBe(true);
    c = tick(c, 1000);
    expect(c.t).toBe(T0 + 600_000);
    c = tick(c, 1e9);
    expect(c.t).toBe(T0 + DAY);
    expect(c.playing).toBe(false);
    // Playing again at the end starts over.
    expect(toggle(c)).toMatchObject({ playing: true, t: T0 });
  });
  it("does not move when paused, nor backwards", () => {
    const c = newClock(T0, T0 + DAY);
    expect(tick(c, 5000)).toBe(c);
    const p = toggle(c);
    expect(tick(p, -100).t).toBe(T0);
  });
  it("seeks inside the range only", () => {
    const c = newClock(T0, T0 + DAY);
    expect(seek(c, T0 - 5).t).toBe(T0);
    expect(seek(c, T0 + 2 * DAY).t).toBe(T0 + DAY);
    expect(seek(c, T0 + 42).t).toBe(T0 + 42);
  });
  it("plays any range in about a minute by default", () => {
    expect(defaultSpeed(3600_000)).toBe(60);
    expect(defaultSpeed(DAY)).toBe(900);
    expect(defaultSpeed(3 * DAY)).toBe(3600);
    expect(defaultSpeed(60_000)).toBe(10);
  });
});

describe("the speed chart", () => {
  it("labels hours within a day and dates across days, in the fleet's zone", () => {
    expect(axisLabel(T0 + 9.5 * 3_600_000, DAY, "Asia/Shanghai")).toBe("09:30");
    expect(axisLabel(T0 + 9.5 * 3_600_000, 2 * DAY, "Asia/Shanghai")).toBe("11-25 09:30");
    // A few hours across midnight: the new date at 00:00.
    expect(axisLabel(T0, 4 * 3_600_000, "Asia/Shanghai")).toBe("11-25");
    expect(axisLabel(T0, 4 * 3_600_000, "UTC")).toBe("16:00");
  });
  it("breaks the line where the terminal was silent", () => {
    const s = speedSeries([0, 10_000, 10_000 + MAX_INTERPOLATE_MS + 1], [1.04, 2, 3]);
    expect(s).toEqual([[0, 1], [10_000, 2], [10_001, "-"], [10_000 + MAX_INTERPOLATE_MS + 1, 3]]);
  });
  it("clamps alarm bands to the range; an open alarm lasts to the end", () => {
    const a = (started_at: number, ended_at: number | null) =>
      ({ id: "x", vehicle: "v", plate: "p", org: "o", kind: "speeding", state: "open", started_at, ended_at, lat: 0, lon: 0 }) as Alarm;
    const bands = alarmBands([a(T0 - 100, T0 + 100), a(T0 + 500, null)], T0, T0 + 1000);
    expect(bands.map(([s, e]) => [s - T0, e - T0])).toEqual([[0, 100], [500, 1000]]);
  });
});
