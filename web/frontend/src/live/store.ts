// The live picture: every vehicle's latest item and the alarm desk. Vehicles are kept out of
// Vue's reactivity (10,000 objects updated several times a second would cost more than the map
// itself); a version number tells views that something changed.
import { markRaw, reactive, shallowRef } from "vue";
import type { Alarm, FeedFrame, VehicleItem } from "@/api/types";
import { applyAlarm } from "@/domain/alarms";

export interface LiveState {
  vehicles: Map<string, VehicleItem>;
  alarms: Map<string, Alarm>;
  /** The web node's own counter: meaningful only to the node that sent it (`node`). */
  lastSeq: number | null;
  /** The greatest global alarm id seen (a Redis Stream id, the same on every web node). */
  lastGid: string | null;
  /** The web node of the last snapshot: a reconnect tells it where the page came from. */
  node: string | null;
  /** Epoch ms of the last frame of any kind. */
  lastFrameAt: number;
}

export const live: LiveState = markRaw({
  vehicles: new Map<string, VehicleItem>(),
  alarms: new Map<string, Alarm>(),
  lastSeq: null,
  lastGid: null,
  node: null,
  lastFrameAt: 0,
});

/**
 * True after a reconnect the server could not make exact (`gap` on the snapshot: the page was
 * away longer than the alarm history the node keeps); the page says so until dismissed.
 */
export const feedGap = shallowRef(false);

/** Compare two global alarm ids ("<ms>-<n>"): negative, zero or positive. */
export function compareGid(a: string, b: string): number {
  const [am, an] = a.split("-").map((x) => Number(x));
  const [bm, bn] = b.split("-").map((x) => Number(x));
  return am !== bm ? am - bm : (an || 0) - (bn || 0);
}

function takeGid(gid: string | null | undefined): void {
  if (typeof gid !== "string" || !/^\d+-\d+$/.test(gid)) return;
  if (live.lastGid === null || compareGid(gid, live.lastGid) > 0) live.lastGid = gid;
}

/** Bumped when vehicles change (the map redraws on it, throttled). */
export const vehiclesVersion = shallowRef(0);
/** Bumped when the desk changes. */
export const alarmsVersion = shallowRef(0);

/**
 * Views re-render at most this often for a burst of frames: at 10,000 vehicles the feed brings
 * many alarm updates a second (a speeding episode's detail changes with each point), and a
 * desk that re-sorts and re-renders on every one keeps the main thread busy for nothing.
 */
export const VIEW_COALESCE_MS = 250;
const pending = { vehicles: null as ReturnType<typeof setTimeout> | null, alarms: null as ReturnType<typeof setTimeout> | null };

function bump(which: "vehicles" | "alarms"): void {
  if (pending[which] !== null) return;
  pending[which] = setTimeout(() => {
    pending[which] = null;
    if (which === "vehicles") vehiclesVersion.value++;
    else alarmsVersion.value++;
  }, VIEW_COALESCE_MS);
}
/** New alarms as they arrive (the desk sounds and notifies on them). */
export const arrivals = reactive({ last: null as Alarm | null, count: 0 });

export type FrameEffect = { newAlarms: Alarm[] };

/** Apply one feed frame; returns the alarms that are new to this desk. */
export function applyFrame(f: FeedFrame, now: number): FrameEffect {
  const out: FrameEffect = { newAlarms: [] };
  live.lastFrameAt = now;
  if ("seq" in f && typeof f.seq === "number") {
    live.lastSeq = live.lastSeq === null ? f.seq : Math.max(live.lastSeq, f.seq);
  }
  if (f.type === "snapshot") {
    if (typeof f.node === "string") {
      // A new node's seq counts something else: resume by seq only where it came from.
      if (live.node !== null && f.node !== live.node) live.lastSeq = f.seq;
      live.node = f.node;
    }
    takeGid(f.gid);
    if (f.gap) feedGap.value = true;
    for (const v of f.vehicles) live.vehicles.set(v.vehicle, v);
    const before = new Set(live.alarms.keys());
    live.alarms.clear();
    for (const a of f.alarms) {
      applyAlarm(live.alarms, a);
      if (!before.has(a.id) && live.alarms.has(a.id)) out.newAlarms.push(a);
    }
    vehiclesVersion.value++;
    alarmsVersion.value++;
  } else if (f.type === "positions") {
    for (const v of f.items) live.vehicles.set(v.vehicle, v);
    if (f.items.length) bump("vehicles");
  } else if (f.type === "alarm") {
    takeGid(f.gid);
    if (applyAlarm(live.alarms, f.alarm) === "added") out.newAlarms.push(f.alarm);
    bump("alarms");
  }
  return out;
}

/** The server answered an ack or close: reflect it at once (the feed's frame follows). */
export function patchAlarm(id: string, patch: Partial<Alarm>): void {
  const a = live.alarms.get(id);
  if (!a) return;
  applyAlarm(live.alarms, { ...a, ...patch });
  alarmsVersion.value++;
}

export function resetLive(): void {
  live.vehicles.clear();
  live.alarms.clear();
  live.lastSeq = null;
  live.lastGid = null;
  live.node = null;
  live.lastFrameAt = 0;
  feedGap.value = false;
  vehiclesVersion.value++;
  alarmsVersion.value++;
}
