import { describe, expect, it } from "vitest";
import type { Alarm } from "@/api/types";
import {
  applyAlarm,
  compareAlarms,
  contactPhone,
  fenceName,
  isAcknowledged,
  measuredVsLimit,
  severityOf,
  sortAlarms,
  telHref,
  terminalBit,
  terminalName,
  unacknowledged,
} from "@/domain/alarms";

function alarm(over: Partial<Alarm> = {}): Alarm {
  return {
    id: "v1:speeding:1000",
    vehicle: "v1",
    plate: "川X00001",
    org: "c",
    kind: "speeding",
    state: "open",
    started_at: 1000,
    lat: 30.45,
    lon: 106.63,
    detail: {},
    ack: null,
    ...over,
  };
}

describe("severity", () => {
  it("takes the alarm's own field first, then detail.severity", () => {
    expect(severityOf(alarm({ severity: "info" }))).toBe("info");
    expect(severityOf(alarm({ detail: { severity: "critical" } }))).toBe("critical");
  });
  it("derives critical for SOS, collision, rollover and a sealed vehicle moving", () => {
    for (const name of ["sos", "collision", "rollover"]) {
      expect(severityOf(alarm({ kind: "terminal_alarm", id: `v1:terminal_alarm.${name}:5` }))).toBe("critical");
      expect(severityOf(alarm({ kind: "terminal_alarm", detail: { name } }))).toBe("critical");
    }
    expect(severityOf(alarm({ kind: "sealed_moving" }))).toBe("critical");
    expect(severityOf(alarm({ kind: "terminal_alarm", detail: { name: "power_cut", bit: 8 } }))).toBe("warning");
    expect(severityOf(alarm())).toBe("warning");
  });
  it("reads the terminal alarm's name from the old id form too", () => {
    expect(terminalName(alarm({ kind: "terminal_alarm", id: "v1:terminal_alarm/sos:5" }))).toBe("sos");
    expect(terminalBit(alarm({ kind: "terminal_alarm", id: "v1:terminal_alarm.illegal_ignition:5" }))).toBe(27);
    expect(terminalName(alarm())).toBeUndefined();
  });
});

describe("desk order", () => {
  it("puts critical on top, then unacknowledged, then open, then newest", () => {
    const sos = alarm({ id: "sos", kind: "terminal_alarm", detail: { name: "sos" }, started_at: 1 });
    const newWarn = alarm({ id: "w-new", started_at: 50 });
    const oldWarn = alarm({ id: "w-old", started_at: 10 });
    const acked = alarm({ id: "w-acked", started_at: 99, ack: { user: "op", at: 1 } });
    const closed = alarm({ id: "w-closed", started_at: 98, state: "closed" });
    const info = alarm({ id: "i", severity: "info", started_at: 100 });
    const order = sortAlarms([info, acked, oldWarn, closed, newWarn, sos]).map((a) => a.id);
    expect(order).toEqual(["sos", "w-new", "w-old", "w-closed", "w-acked", "i"]);
  });
  it("is a total order: antisymmetric and stable on ties", () => {
    const a = alarm({ id: "a" });
    const b = alarm({ id: "b" });
    expect(compareAlarms(a, b)).toBe(-compareAlarms(b, a));
    expect(compareAlarms(a, a)).toBe(0);
  });
});

describe("card facts", () => {
  it("measured vs limit from max_speed_kmh and limit_kmh", () => {
    expect(measuredVsLimit(alarm({ detail: { max_speed_kmh: 103.4, limit_kmh: 80 } }))).toEqual([103, 80]);
    expect(measuredVsLimit(alarm({ detail: { speed_kmh: 97, limit_kmh: 60 } }))).toEqual([97, 60]);
    expect(measuredVsLimit(alarm({ detail: { max_speed_kmh: 103 } }))).toBeUndefined();
  });
  it("fence name, else the fence id of older rows", () => {
    expect(fenceName(alarm({ detail: { fence_name: "某KTV", fence: "f1" } }))).toBe("某KTV");
    expect(fenceName(alarm({ detail: { fence: "f1" } }))).toBe("f1");
    expect(fenceName(alarm())).toBeUndefined();
  });
  it("a phone as a tel: link keeps only digits and a leading +", () => {
    expect(telHref("+86 138-0000-0000")).toBe("tel:+8613800000000");
    expect(telHref("0826)2345678+9")).toBe("tel:082623456789");
    expect(contactPhone(alarm({ phone: "13800000000" }))).toBe("13800000000");
    expect(contactPhone(alarm({ detail: { contact_phone: "110" } }))).toBe("110");
  });
});

describe("the desk's map of alarms", () => {
  it("keeps a closed alarm until it is acknowledged", () => {
    const desk = new Map<string, Alarm>();
    expect(applyAlarm(desk, alarm())).toBe("added");
    expect(applyAlarm(desk, alarm({ state: "closed" }))).toBe("updated");
    expect(unacknowledged(desk.values())).toHaveLength(1);
    expect(applyAlarm(desk, alarm({ state: "closed", ack: { user: "op", at: 2 } }))).toBe("removed");
    expect(desk.size).toBe(0);
  });
  it("counts the handling record's ack or close as an acknowledgement, a note not", () => {
    expect(isAcknowledged(alarm({ acks: [{ user: "op", at: 1, action: "note" }] }))).toBe(false);
    expect(isAcknowledged(alarm({ acks: [{ user: "op", at: 1, action: "close" }] }))).toBe(true);
  });
});
