import { describe, expect, it } from "vitest";
import { costsTile, screenRequested } from "@/domain/reports";
import { enViews, zhViews } from "@/views/parts/messages";

function keys(o: object, prefix = ""): string[] {
  return Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === "object" ? keys(v as object, `${prefix}${k}.`) : [`${prefix}${k}`],
  );
}

describe("the board's wall screen", () => {
  it("opens from ?screen=1 in the route or the page address", () => {
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

describe("the 运行费用 tile", () => {
  it("shows the month's costs in whole yuan when the summary has a number", () => {
    expect(costsTile(123456.7, "2026-12-02")).toEqual({ value: "123,457", known: true, month: "2026-12" });
    expect(costsTile(0, "2026-01-31")).toEqual({ value: "0", known: true, month: "2026-01" });
  });
  it("shows — when there is none (null, missing, not a number)", () => {
    for (const v of [null, undefined, "12", Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(costsTile(v, "2026-12-02")).toEqual({ value: "—", known: false, month: "2026-12" });
    }
  });
  it("has no month without a day", () => {
    expect(costsTile(5, null).month).toBeNull();
    expect(costsTile(5, "").month).toBeNull();
  });
});
