import { describe, expect, it } from "vitest";
import { screenRequested } from "@/domain/reports";
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
