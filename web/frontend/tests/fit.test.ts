import { describe, expect, it } from "vitest";
import { fitPadding, MIN_FIT_PX } from "@/map/fit";

describe("fitPadding", () => {
  it("keeps the padding asked on a large map", () => {
    expect(fitPadding({ x: 1020, y: 780 }, 30)).toEqual([30, 30]);
  });
  it("shrinks it so that half of each side stays for the points", () => {
    expect(fitPadding({ x: 100, y: 400 }, 30)).toEqual([25, 30]);
    expect(fitPadding({ x: 40, y: 40 }, 30)).toEqual([10, 10]);
  });
  it("refuses a map too small to show anything (the 10 px map of a phone once threw NaN)", () => {
    expect(fitPadding({ x: 10, y: 775 }, 30)).toBeNull();
    expect(fitPadding({ x: 0, y: 0 }, 0)).toBeNull();
    expect(fitPadding({ x: -5, y: 300 }, 20)).toBeNull();
    expect(fitPadding({ x: Number.NaN, y: 300 }, 20)).toBeNull();
    expect(fitPadding({ x: MIN_FIT_PX, y: MIN_FIT_PX }, 20)).toEqual([8, 8]);
  });
  it("never gives a negative or non-number padding", () => {
    for (let i = 0; i < 500; i++) {
      const size = { x: Math.random() * 2000 - 100, y: Math.random() * 2000 - 100 };
      const want = Math.random() * 200 - 50;
      const p = fitPadding(size, want);
      if (p === null) {
        expect(size.x < MIN_FIT_PX || size.y < MIN_FIT_PX).toBe(true);
        continue;
      }
      expect(p[0]).toBeGreaterThanOrEqual(0);
      expect(p[1]).toBeGreaterThanOrEqual(0);
      // what is left for the points is at least half of each side
      expect(size.x - 2 * p[0]).toBeGreaterThanOrEqual(size.x / 2);
      expect(size.y - 2 * p[1]).toBeGreaterThanOrEqual(size.y / 2);
    }
  });
});
