import { describe, expect, it } from "vitest";
import { ageBucket, dayStartMs, formatDay, formatDuration, formatTime, zonedToMs } from "@/format/time";

const T0 = 1_764_034_200_000; // 2025-11-25 09:30:00 +08:00

describe("times in the fleet's zone", () => {
  it("formats YYYY-MM-DD HH:mm:ss in Asia/Shanghai whatever the host zone", () => {
    expect(formatTime(T0, "Asia/Shanghai")).toBe("2025-11-25 09:30:00");
    expect(formatTime(T0, "UTC")).toBe("2025-11-25 01:30:00");
    expect(formatDay(T0 + 15 * 3_600_000, "Asia/Shanghai")).toBe("2025-11-26");
    expect(formatTime(null)).toBe("—");
  });
  it("finds local midnight and wall-clock times", () => {
    expect(dayStartMs("2025-11-25", "Asia/Shanghai")).toBe(T0 - 9.5 * 3_600_000);
    expect(zonedToMs("2025-11-25 09:30", "Asia/Shanghai")).toBe(T0);
    expect(zonedToMs("2025-11-25T09:30:05", "Asia/Shanghai")).toBe(T0 + 5_000);
    expect(() => zonedToMs("yesterday")).toThrow();
  });
  it("round-trips every hour of a year", () => {
    for (let ms = T0; ms < T0 + 365 * 86_400_000; ms += 3_600_000 * 7) {
      expect(zonedToMs(formatTime(ms, "Asia/Shanghai"), "Asia/Shanghai")).toBe(ms);
    }
  });
  it("says durations and ages in whole units", () => {
    const u = { h: "小时", min: "分钟", s: "秒" };
    expect(formatDuration(45_000, u)).toBe("45 秒");
    expect(formatDuration(200_000, u)).toBe("3 分钟 20 秒");
    expect(formatDuration(3_900_000, u)).toBe("1 小时 5 分钟");
    expect(ageBucket(T0, T0 + 30_000)).toEqual({ unit: "justNow", n: 0 });
    expect(ageBucket(T0, T0 + 12 * 60_000)).toEqual({ unit: "minutesAgo", n: 12 });
    expect(ageBucket(T0, T0 + 3 * 3_600_000)).toEqual({ unit: "hoursAgo", n: 3 });
    expect(ageBucket(T0, T0 + 3 * 86_400_000)).toEqual({ unit: "daysAgo", n: 3 });
  });
});
