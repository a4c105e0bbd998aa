import { describe, expect, it } from "vitest";
import { COST_KINDS, monthOf } from "@/api/costs";
import en from "@/i18n/en";
import zh from "@/i18n/zh";

describe("running costs", () => {
  it("takes the month in the fleet's zone, not the host's", () => {
    const lastEvening = Date.UTC(2026, 10, 30, 17, 0); // 2026-12-01 01:00 in Shanghai
    expect(monthOf(lastEvening, "Asia/Shanghai")).toBe("2026-12");
    expect(monthOf(lastEvening, "UTC")).toBe("2026-11");
  });
  it("names every cost kind and every check in both languages", () => {
    for (const k of COST_KINDS) {
      expect(zh.costs.kinds[k]).toBeTruthy();
      expect(en.costs.kinds[k]).toBeTruthy();
    }
    const checks = Object.keys(zh.kind).filter((k) => k.startsWith("cost_"));
    expect(checks).toHaveLength(8);
    for (const k of checks) expect((en.kind as Record<string, string>)[k]).toBeTruthy();
  });
});
