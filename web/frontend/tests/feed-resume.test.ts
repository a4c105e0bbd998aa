import { beforeEach, describe, expect, it } from "vitest";
import type { Alarm, FeedFrame } from "@/api/types";
import { feedUrl } from "@/live/feed";
import { applyFrame, compareGid, feedGap, live, resetLive } from "@/live/store";

const T0 = 1_764_034_200_000;

function alarm(id: string, state: "open" | "closed" = "open"): Alarm {
  return {
    id,
    vehicle: "V1",
    plate: "川X10001",
    org: "city",
    kind: "speeding",
    state,
    started_at: T0,
    ended_at: state === "closed" ? T0 + 60_000 : null,
    lat: 30.4,
    lon: 106.6,
    severity: "warning",
    detail: {},
    ack: null,
    acks: [],
  } as unknown as Alarm;
}

function snapshot(node: string, seq: number, gid: string | null, gap = false, alarms: Alarm[] = []): FeedFrame {
  return { type: "snapshot", seq, node, gid, resume: gap ? "gap" : "none", gap, vehicles: [], alarms };
}

describe("resuming the feed on another web node", () => {
  beforeEach(() => resetLive());

  it("orders global alarm ids by time, then by sequence", () => {
    expect(compareGid("1764034200000-2", "1764034200000-10")).toBeLessThan(0);
    expect(compareGid("1764034200001-0", "1764034200000-99")).toBeGreaterThan(0);
    expect(compareGid("5-1", "5-1")).toBe(0);
  });

  it("remembers the node and the greatest alarm id, and sends both on reconnect", () => {
    applyFrame(snapshot("A", 10, `${T0}-0`), T0);
    applyFrame({ type: "alarm", seq: 11, gid: `${T0 + 5}-3`, alarm: alarm("a1") }, T0);
    applyFrame({ type: "alarm", seq: 12, alarm: alarm("a2") }, T0); // shown locally: no gid
    expect(live.node).toBe("A");
    expect(live.lastGid).toBe(`${T0 + 5}-3`);
    expect(live.lastSeq).toBe(12);
    expect(feedUrl({ protocol: "https:", host: "lb" }, "t", live)).toBe(
      `wss://lb/ws/live?token=t&last_seq=12&last_gid=${T0 + 5}-3&node=A`,
    );
  });

  it("takes the new node's seq and never moves the alarm id back", () => {
    applyFrame(snapshot("A", 900, `${T0 + 9}-0`), T0);
    // node B's counter is lower, its snapshot's gid older than what the page saw
    applyFrame(snapshot("B", 40, `${T0 + 2}-0`), T0);
    expect(live.node).toBe("B");
    expect(live.lastSeq).toBe(40);
    expect(live.lastGid).toBe(`${T0 + 9}-0`);
    // the replayed alarm frames that follow the snapshot keep the greatest
    applyFrame({ type: "alarm", seq: 41, gid: `${T0 + 8}-0`, alarm: alarm("a3") }, T0);
    expect(live.lastGid).toBe(`${T0 + 9}-0`);
    expect(live.alarms.has("a3")).toBe(true);
  });

  it("raises the gap notice when the server could not resume exactly", () => {
    applyFrame(snapshot("A", 1, `${T0}-0`), T0);
    expect(feedGap.value).toBe(false);
    applyFrame(snapshot("B", 7, `${T0 + 99}-0`, true, [alarm("a9")]), T0);
    expect(feedGap.value).toBe(true);
    expect(live.alarms.has("a9")).toBe(true);
    resetLive();
    expect(feedGap.value).toBe(false);
  });

  it("ignores a malformed alarm id", () => {
    applyFrame(snapshot("A", 1, "drop-table"), T0);
    applyFrame({ type: "alarm", seq: 2, gid: "x", alarm: alarm("a1") }, T0);
    expect(live.lastGid).toBeNull();
  });
});
