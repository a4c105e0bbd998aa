import { describe, expect, it } from "vitest";
import en from "@/i18n/en";
import zh from "@/i18n/zh";

function keys(o: object, prefix = ""): string[] {
  return Object.entries(o).flatMap(([k, v]) =>
    v && typeof v === "object" ? keys(v as object, `${prefix}${k}.`) : [`${prefix}${k}`],
  );
}

describe("messages", () => {
  it("English has every Chinese key and no other", () => {
    expect(keys(en).sort()).toEqual(keys(zh).sort());
  });
  it("no message is empty", () => {
    for (const dict of [zh, en]) {
      for (const k of keys(dict)) {
        const v = k.split(".").reduce<unknown>((o, p) => (o as Record<string, unknown>)[p], dict);
        expect(typeof v === "string" && v.length > 0, k).toBe(true);
      }
    }
  });
  it("无底图 has its English name (it used to stay Chinese)", () => {
    expect(zh.map.noTiles).toBe("无底图");
    expect(en.map.noTiles).toBe("No base map");
  });
});
