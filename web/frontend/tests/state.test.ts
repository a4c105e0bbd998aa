import { beforeEach, describe, expect, it } from "vitest";
import type { Alarm, VehicleItem } from "@/api/types";
import { feedUrl, retryDelay, RETRY_MAX_MS } from "@/live/feed";
import { applyFrame, live, resetLive } from "@/live/store";
import { buildIndex, CLUSTER_MAX_ZOOM } from "@/map/clusters";
import { labelsUrl, tilesBroken, usableTileSets } from "@/map/basemaps";
import { navFor, roleForPath } from "@/nav";
import { CONNECTION_GRACE_MS, isLost } from "@/stores/connection";

function vehicle(i: number, over: Partial<VehicleItem> = {}): VehicleItem {
  return { vehicle: `v${i}`, plate: `川X${i}`, org: "c", ts: 0, lat: 30 + (i % 100) * 0.01, lon: 106 + Math.floor(i / 100) * 0.01, speed: 0, heading: 0, acc: false, state: "parked", ...over };
}
const alarm = (id: string, over: Partial<Alarm> = {}): Alarm => ({
  id, vehicle: "v1", plate: "p", org: "c", kind: "speeding", state: "open", started_at: 0, lat: 0, lon: 0, ack: null, ...over,
});

describe("live state", () => {
  beforeEach(resetLive);
  it("applies a snapshot, positions and alarms, tracking last_seq", () => {
    const e = applyFrame({ type: "snapshot", seq: 5, vehicles: [vehicle(1), vehicle(2)], alarms: [alarm("a")] }, 1);
    expect(e.newAlarms.map((a) => a.id)).toEqual(["a"]);
    applyFrame({ type: "positions", seq: 7, items: [vehicle(1, { lat: 31 })] }, 2);
    expect(live.vehicles.get("v1")?.lat).toBe(31);
    expect(applyFrame({ type: "alarm", seq: 6, alarm: alarm("a", { state: "closed" }) }, 3).newAlarms).toEqual([]);
    expect(live.lastSeq).toBe(7);
    expect(applyFrame({ type: "alarm", seq: 8, alarm: alarm("b") }, 4).newAlarms).toHaveLength(1);
    // a snapshot after a reconnect does not announce alarms the desk already has
    expect(applyFrame({ type: "snapshot", seq: 9, vehicles: [], alarms: [alarm("a"), alarm("b")] }, 5).newAlarms).toEqual([]);
  });
});

describe("feed socket", () => {
  it("backs off to a bounded delay and resumes with last_seq", () => {
    expect([0, 1, 2, 3, 4, 5, 9].map(retryDelay)).toEqual([250, 500, 1000, 2000, 4000, 4000, RETRY_MAX_MS]);
    expect(feedUrl({ protocol: "https:", host: "h:1" }, "a b", { lastSeq: 42, lastGid: null, node: null })).toBe("wss://h:1/ws/live?token=a%20b&last_seq=42");
    expect(feedUrl({ protocol: "http:", host: "h" }, "t", { lastSeq: null, lastGid: null, node: null })).toBe("ws://h/ws/live?token=t");
  });
  it("declares the connection lost only after the grace period", () => {
    expect(isLost(1000, null, 1000 + CONNECTION_GRACE_MS - 1)).toBe(false);
    expect(isLost(1000, null, 1000 + CONNECTION_GRACE_MS)).toBe(true);
    expect(isLost(null, 0, CONNECTION_GRACE_MS)).toBe(true);
    expect(isLost(null, null, 1e12)).toBe(false);
    expect(CONNECTION_GRACE_MS).toBeLessThan(3000);
  });
});

describe("clusters", () => {
  it("count every vehicle once and carry the alarm count", () => {
    const vs = Array.from({ length: 10_000 }, (_, i) => vehicle(i, { state: i % 97 === 0 ? "alarm" : "parked" }));
    const idx = buildIndex(vs);
    const all = idx.getClusters([-180, -85, 180, 85], 8);
    const members = all.reduce((n, f) => n + ((f.properties as { point_count?: number }).point_count ?? 1), 0);
    const alarms = all.reduce((n, f) => n + (f.properties as { alarm: number }).alarm, 0);
    expect(members).toBe(10_000);
    expect(alarms).toBe(vs.filter((v) => v.state === "alarm").length);
    const street = idx.getClusters([-180, -85, 180, 85], CLUSTER_MAX_ZOOM + 1);
    expect(street).toHaveLength(10_000);
  });
});

describe("base maps", () => {
  it("declares tiles broken when they fail and nothing loads", () => {
    expect(tilesBroken({ loaded: 0, failed: 3 })).toBe(false);
    expect(tilesBroken({ loaded: 0, failed: 4 })).toBe(true);
    expect(tilesBroken({ loaded: 40, failed: 4 })).toBe(false);
    expect(tilesBroken({ loaded: 4, failed: 30 })).toBe(true);
  });
  it("adds Tianditu's label layer and drops empty tile sets", () => {
    const url = "http://t{s}.tianditu.gov.cn/vec_w/wmts?LAYER=vec&tk=KEY&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}";
    expect(labelsUrl({ name: "天地图", url })).toBe("http://t{s}.tianditu.gov.cn/cva_w/wmts?LAYER=cva&tk=KEY&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}");
    expect(labelsUrl({ name: "OSM", url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png" })).toBeUndefined();
    expect(usableTileSets([{ name: "none", url: "" }, { name: "OSM", url: "x" }]).map((s) => s.name)).toEqual(["OSM"]);
  });
});

describe("navigation", () => {
  it("shows each role what it may open", () => {
    const names = (r: "viewer" | "operator" | "admin") =>
      navFor(r).flatMap((n) => [n.name, ...(n.children ?? []).map((c) => c.name)]);
    expect(names("viewer")).toEqual(["monitor", "alarms", "playback", "board", "vehicles", "drivers", "reports"]);
    expect(names("operator")).toContain("deadLetters");
    expect(names("operator")).not.toContain("users");
    // 派车 follows the duties, not the role (#16; tests/orders.test.ts "the 派车 menu")
    expect(names("admin")).toEqual(expect.arrayContaining(["users", "fences", "deadLetters", "audit", "costs"]));
    expect(names("admin")).not.toContain("dispatch");
    expect(navFor(undefined)).toEqual([]);
    expect(roleForPath("/system/users")).toBe("admin");
    expect(roleForPath("/monitor")).toBe("viewer");
  });
});
