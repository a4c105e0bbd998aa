// The desk's sounds, one tone per severity (critical has its own two-tone siren) plus the
// session and connection banners. Web Audio only, no sound files to fetch. The context is
// created and resumed inside the login click (a user gesture), so the browser lets it play;
// when it is still blocked, `sound.blocked` makes the page say 声音已关闭.
import { reactive } from "vue";
import type { Tone } from "@/domain/reminder";

/** Each tone as (frequency Hz, duration s) steps: distinguishable by ear at 3 a.m. */
export const TONES: Record<Tone, ReadonlyArray<readonly [number, number]>> = {
  critical: [
    [988, 0.18],
    [659, 0.18],
    [988, 0.18],
    [659, 0.18],
    [988, 0.18],
    [659, 0.18],
  ],
  warning: [
    [880, 0.25],
    [0, 0.1],
    [880, 0.25],
  ],
  info: [[660, 0.2]],
  session: [
    [784, 0.3],
    [523, 0.3],
    [392, 0.5],
  ],
  connection: [
    [440, 0.2],
    [0, 0.1],
    [440, 0.2],
    [0, 0.1],
    [440, 0.4],
  ],
};

interface SoundState {
  enabled: boolean;
  blocked: boolean;
  /** Every tone asked for, newest last (the browser tests read it; bounded). */
  played: { tone: Tone; at: number; audible: boolean }[];
}

export const sound: SoundState = reactive({ enabled: true, blocked: false, played: [] });
const PLAYED_LIMIT = 200;

let ctx: AudioContext | null = null;

function context(): AudioContext | null {
  if (ctx) return ctx;
  const Ctor = window.AudioContext ?? (window as unknown as { webkitAudioContext?: typeof AudioContext }).webkitAudioContext;
  if (!Ctor) return null;
  ctx = new Ctor();
  ctx.onstatechange = () => {
    sound.blocked = ctx?.state !== "running";
  };
  return ctx;
}

/** Call from a user gesture (the login click, the 声音已关闭 warning). */
export async function unlockAudio(): Promise<boolean> {
  const c = context();
  if (!c) {
    sound.blocked = true;
    return false;
  }
  try {
    await c.resume();
  } catch {
    /* stays suspended: reported below */
  }
  sound.blocked = c.state !== "running";
  return !sound.blocked;
}

/** Check without a gesture (a page reloaded with a stored login may not play sound). */
export function checkAudio(): void {
  const c = context();
  sound.blocked = !c || c.state !== "running";
}

export function play(tone: Tone): void {
  const c = context();
  const audible = sound.enabled && c !== null && c.state === "running";
  sound.played.push({ tone, at: Date.now(), audible });
  if (sound.played.length > PLAYED_LIMIT) sound.played.splice(0, sound.played.length - PLAYED_LIMIT);
  if (!audible || c === null) {
    if (c !== null && c.state !== "running") sound.blocked = true;
    return;
  }
  let t = c.currentTime;
  for (const [freq, dur] of TONES[tone]) {
    if (freq > 0) {
      const o = c.createOscillator();
      const g = c.createGain();
      o.type = tone === "critical" ? "square" : "sine";
      o.frequency.value = freq;
      g.gain.value = tone === "critical" ? 0.12 : 0.15;
      o.connect(g);
      g.connect(c.destination);
      o.start(t);
      o.stop(t + dur);
    }
    t += dur;
  }
}
