// When the desk sounds: a pure schedule. The reminder repeats for every alarm that is not
// acknowledged — closing does not silence it (issue 14: a short speeding episode used to beep
// once and go quiet). Critical alarms repeat faster and use their own tone.
import type { Alarm, Severity } from "@/api/types";
import { isAcknowledged, severityOf } from "./alarms";

export interface ReminderPolicy {
  /** Seconds between reminders while something of that severity is unacknowledged. */
  everyMs: Record<Severity, number>;
}

export const DEFAULT_POLICY: ReminderPolicy = {
  everyMs: { critical: 3_000, warning: 10_000, info: 30_000 },
};

export type Tone = "critical" | "warning" | "info" | "session" | "connection";

export interface ReminderState {
  /** When each severity last sounded (epoch ms). */
  lastAt: Partial<Record<Severity, number>>;
}

export function newReminderState(): ReminderState {
  return { lastAt: {} };
}

/** The most severe unacknowledged severity on the desk, or null when nothing waits. */
export function pendingSeverity(alarms: Iterable<Alarm>): Severity | null {
  let best: Severity | null = null;
  for (const a of alarms) {
    if (isAcknowledged(a)) continue;
    const s = severityOf(a);
    if (s === "critical") return s;
    if (s === "warning" || best === null) best = s;
  }
  return best;
}

/**
 * Call on every tick (and on each new alarm). Returns the tone to play now, or null, and the
 * next state. One tone at a time: the most severe pending one, when its interval has passed.
 */
export function reminderTick(
  alarms: Iterable<Alarm>,
  state: ReminderState,
  now: number,
  policy: ReminderPolicy = DEFAULT_POLICY,
): { tone: Tone | null; state: ReminderState } {
  const sev = pendingSeverity(alarms);
  if (sev === null) return { tone: null, state: { lastAt: {} } };
  const last = state.lastAt[sev];
  if (last !== undefined && now - last < policy.everyMs[sev]) return { tone: null, state };
  return { tone: sev, state: { lastAt: { ...state.lastAt, [sev]: now } } };
}
