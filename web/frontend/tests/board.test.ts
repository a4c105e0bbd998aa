import { describe, expect, it } from "vitest";
import { alarmsToday, kindsByCount, orgAlarms, panelAt, SCREEN_PANELS, SCREEN_ROTATE_MS, screenRequested, type Stats } from "@/views/parts/board";
import { enViews, zhViews } from "@/views/parts/messages";

function keys(o: object, prefix = ""): string[] {
  return Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === "object" ? keys(v as object, `${prefix}${k}.`) : [`${prefix}${k}`],
  );
}

describe("the board", () => {
  it("counts today's alarms and orders kinds by count", () => {
    const s = { alarms_by_kind: { speeding: 3, off_hours: 5, fatigue: 0, offline: 3 } } as unknown as Stats;
    expect(alarmsToday(s)).toBe(11);
    expect(kindsByCount(s.alarms_by_kind, ["speeding", "off_hours", "offline", "fatigue"])).toEqual([
      ["off_hours", 5],
      ["speeding", 3],
      ["offline", 3],
    ]);
    expect(orgAlarms({ org: "x", vehicles: 1, active_vehicles: 0, mileage_km: 0, trips: 0, driving_s: 0, alarms: { a: 2, b: 1 } })).toBe(3);
  });
  it("turns the wall screen's panels by themselves, in order, round and round", () => {
    const seen = Array.from({ length: 7 }, (_, i) => panelAt(i * SCREEN_ROTATE_MS + 1));
    expect(seen).toEqual([...SCREEN_PANELS, ...SCREEN_PANELS, SCREEN_PANELS[0]]);
    expect(panelAt(-5)).toBe(SCREEN_PANELS[0]);
  });
  it("opens the wall screen from ?screen=1 in the route or the page address", () => {
    expect(screenRequested({ screen: "1" }, "")).toBe(true);
    expect(screenRequested({}, "?screen=1")).toBe(true);
    expect(screenRequested({ screen: "0" }, "?x=1")).toBe(false);
  });
});

describe("the views' messages", () => {
  it("English has every Chinese key and no other, none empty", () => {
    expect(keys(enViews).sort()).toEqual(keys(zhViews).sort());
    for (const dict of [zhViews, enViews]) {
      for (const k of keys(dict)) {
        const v = k.split(".").reduce<unknown>((o, p) => (o as Record<string, unknown>)[p], dict);
        expect(typeof v === "string" && v.length > 0, k).toBe(true);
      }
    }
  });
});
