// The speed chart of the playback (pure: the ECharts option from the track). The time axis is
// the queried range, labelled in the fleet's zone; the limit (limit_kmh) is a line; each alarm
// is a shaded band from its start to its end with a pin at its start.
import type { Alarm } from "@/api/types";
import { formatTime, zonedParts } from "@/format/time";
import { MAX_INTERPOLATE_MS, type TrackResponse } from "./playback";

const DAY_MS = 86_400_000;

/**
 * Axis label of a time in the fleet's zone: HH:mm within a day; over more than a day
 * MM-DD HH:mm; a shorter range across midnight says the new date at 00:00.
 */
export function axisLabel(ms: number, spanMs: number, zone: string): string {
  const p = zonedParts(ms, zone);
  if (spanMs > DAY_MS) return `${p.month}-${p.day} ${p.hour}:${p.minute}`;
  if (p.hour === "00" && p.minute === "00") return `${p.month}-${p.day}`;
  return `${p.hour}:${p.minute}`;
}

/** [ts, speed] pairs, with a break ("-") where the terminal was silent longer than the bridge. */
export function speedSeries(ts: readonly number[], speed: readonly number[]): [number, number | "-"][] {
  const out: [number, number | "-"][] = [];
  for (let i = 0; i < ts.length; i++) {
    if (i > 0 && ts[i] - ts[i - 1] > MAX_INTERPOLATE_MS) out.push([ts[i - 1] + 1, "-"]);
    out.push([ts[i], Math.round(speed[i] * 10) / 10]);
  }
  return out;
}

/** Alarm bands inside the range: [start, end] clamped to it. */
export function alarmBands(alarms: readonly Alarm[], from: number, to: number): [number, number, Alarm][] {
  return alarms
    .map((a): [number, number, Alarm] => [Math.max(from, a.started_at), Math.min(to, a.ended_at ?? to), a])
    .filter(([s, e]) => e >= s && s <= to);
}

export interface SpeedLabels {
  speed: string;
  limit: (v: number) => string;
  kind: (k: string) => string;
  unit: string;
}

export function speedOption(r: TrackResponse, zone: string, l: SpeedLabels, cursor: number, dark = false) {
  const span = r.to - r.from;
  const limit = typeof r.limit_kmh === "number" && r.limit_kmh > 0 ? r.limit_kmh : null;
  const bands = alarmBands(r.alarms, r.from, r.to);
  const fg = dark ? "#cfd8e3" : "#333";
  return {
    animation: false,
    grid: { left: 48, right: 24, top: 28, bottom: 28 },
    tooltip: {
      trigger: "axis",
      // The axis pointer would say the browser's zone: the fleet's zone, always.
      formatter: (ps: { value: [number, number | "-"] }[]) => {
        const p = ps[0];
        if (!p) return "";
        const v = p.value[1];
        return `${formatTime(p.value[0], zone)}<br/>${l.speed} ${typeof v === "number" ? `${v} ${l.unit}` : "—"}`;
      },
      axisPointer: { label: { formatter: (x: { value: number }) => formatTime(x.value, zone) } },
    },
    xAxis: {
      type: "time",
      min: r.from,
      max: r.to,
      axisLabel: { color: fg, hideOverlap: true, formatter: (v: number) => axisLabel(v, span, zone) },
    },
    yAxis: {
      type: "value",
      name: l.unit,
      min: 0,
      max: (v: { max: number }) => Math.max(Math.ceil((Math.max(v.max, limit ?? 0) + 10) / 10) * 10, 40),
      axisLabel: { color: fg },
      nameTextStyle: { color: fg },
    },
    series: [
      {
        id: "speed",
        name: l.speed,
        type: "line",
        showSymbol: false,
        connectNulls: false,
        sampling: "lttb",
        lineStyle: { width: 1.5, color: "#1f6fb2" },
        areaStyle: { color: "rgba(31,111,178,0.12)" },
        data: speedSeries(r.points.ts, r.points.speed),
        markLine: limit
          ? {
              symbol: "none",
              silent: true,
              lineStyle: { color: "#d32f2f", type: "dashed", width: 1.5 },
              label: { formatter: l.limit(limit), color: "#d32f2f", position: "insideEndTop" },
              data: [{ yAxis: limit }],
            }
          : undefined,
        markArea: bands.length
          ? {
              silent: true,
              itemStyle: { color: "rgba(211,47,47,0.12)" },
              data: bands.map(([s, e]) => [{ xAxis: s }, { xAxis: Math.max(e, s + span / 500) }]),
            }
          : undefined,
        markPoint: bands.length
          ? {
              symbol: "pin",
              symbolSize: 30,
              itemStyle: { color: "#d32f2f" },
              label: { show: false },
              data: bands.map(([s, , a]) => ({ name: l.kind(a.kind), coord: [s, 0], value: l.kind(a.kind) })),
            }
          : undefined,
      },
      {
        id: "cursor",
        type: "line",
        data: [],
        markLine: {
          symbol: "none",
          silent: true,
          animation: false,
          lineStyle: { color: "#f39c12", width: 2, type: "solid" },
          label: { show: false },
          data: [{ xAxis: cursor }],
        },
      },
    ],
  };
}

/** The option change that moves only the cursor (cheap, every few frames). */
export function cursorOption(cursor: number) {
  return { series: [{ id: "cursor", markLine: { data: [{ xAxis: cursor }] } }] };
}
