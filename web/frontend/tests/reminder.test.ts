import { describe, expect, it } from "vitest";
import type { Alarm } from "@/api/types";
import { DEFAULT_POLICY, newReminderState, pendingSeverity, reminderTick, type ReminderState } from "@/domain/reminder";

function alarm(id: string, over: Partial<Alarm> = {}): Alarm {
  return { id, vehicle: "v", plate: "p", org: "c", kind: "speeding", state: "open", started_at: 0, lat: 0, lon: 0, ack: null, ...over };
}

function run(alarms: Alarm[], from: number, to: number, step = 250, state: ReminderState = newReminderState()) {
  const tones: [number, string][] = [];
  for (let now = from; now <= to; now += step) {
    const r = reminderTick(alarms, state, now);
    state = r.state;
    if (r.tone) tones.push([now, r.tone]);
  }
  return { tones, state };
}

describe("reminder", () => {
  it("repeats for an unacknowledged alarm even after it closed", () => {
    const { tones } = run([alarm("a", { state: "closed", ended_at: 5 })], 0, 30_000);
    expect(tones.map((t) => t[0])).toEqual([0, 10_000, 20_000, 30_000]);
    expect(new Set(tones.map((t) => t[1]))).toEqual(new Set(["warning"]));
  });
  it("stops once acknowledged", () => {
    const a = alarm("a");
    const first = run([a], 0, 10_000);
    expect(first.tones).toHaveLength(2);
    const acked = { ...a, ack: { user: "op", at: 10_001 } };
    expect(run([acked], 10_250, 60_000, 250, first.state).tones).toEqual([]);
  });
  it("a critical alarm uses its own tone, faster, and wins over warnings", () => {
    const sos = alarm("s", { kind: "terminal_alarm", detail: { name: "sos" } });
    const { tones } = run([alarm("w"), sos], 0, 9_000);
    expect(tones.every((t) => t[1] === "critical")).toBe(true);
    expect(tones.map((t) => t[0])).toEqual([0, 3_000, 6_000, 9_000]);
    expect(DEFAULT_POLICY.everyMs.critical).toBeLessThan(DEFAULT_POLICY.everyMs.warning);
  });
  it("is silent with nothing pending", () => {
    expect(pendingSeverity([])).toBeNull();
    expect(run([], 0, 60_000).tones).toEqual([]);
    expect(pendingSeverity([alarm("i", { severity: "info" }), alarm("w")])).toBe("warning");
  });
});
