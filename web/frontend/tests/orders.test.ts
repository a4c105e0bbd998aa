import { describe, expect, it } from "vitest";
import {
  actionState,
  allowedActions,
  conflicts,
  draftProblems,
  emptyDraft,
  hourTicks,
  layoutTimeline,
  normalizeOrder,
  ORDER_STATES,
  overlaps,
  ownApprovalBlocked,
  requestBody,
  suggestedType,
  type Order,
  type OrderState,
  type RequestDraft,
} from "@/domain/orders";
import { zonedToMs } from "@/format/time";
import { dispatchHome, dutyForPath, navFor } from "@/nav";

const H = 3_600_000;
const T0 = Date.UTC(2026, 11, 2, 16, 0); // 2026-12-03 00:00 in Asia/Shanghai

function order(p: Partial<Order> & { id: string }): Order {
  return normalizeOrder({ org: "ga-ws", state: "approved", type: "local", start: T0 + 9 * H, end: T0 + 11 * H, requester: "keyuan", ...p });
}

const keyuan = { username: "keyuan", duties: ["requester"] };
const chuzhang = { username: "chuzhang", duties: ["approver"] };
const demo = { username: "demo", duties: ["requester", "dispatcher"] };
const admin = { username: "admin", duties: ["requester", "approver", "dispatcher"] };

describe("actions per state and duty", () => {
  it("the requester cannot approve their own request, and is told why", () => {
    const o = order({ id: "1", state: "pending", requester: "admin" });
    expect(actionState(o, admin, "approve")).toEqual({ action: "approve", allowed: false, why: "own" });
    expect(actionState(o, admin, "reject").why).toBe("own");
    expect(ownApprovalBlocked(o, admin)).toBe(true);
    expect(allowedActions(o, admin)).toEqual(["cancel"]);
  });
  it("an approver who did not request it approves or rejects a pending order", () => {
    const o = order({ id: "1", state: "pending" });
    expect(allowedActions(o, chuzhang)).toEqual(["approve", "reject"]);
    expect(ownApprovalBlocked(o, chuzhang)).toBe(false);
    expect(actionState(o, keyuan, "approve").why).toBe("duty");
    expect(allowedActions(o, keyuan)).toEqual(["cancel"]);
  });
  it("only a dispatcher dispatches, and only an approved order", () => {
    for (const s of ORDER_STATES) {
      const o = order({ id: "1", state: s });
      expect(actionState(o, demo, "dispatch").allowed, s).toBe(s === "approved");
      expect(actionState(o, chuzhang, "dispatch").allowed).toBe(false);
    }
  });
  it("nothing but printing is left on a finished order; nothing at all on a rejected one", () => {
    for (const s of ["completed"] as OrderState[]) expect(allowedActions(order({ id: "1", state: s }), admin)).toEqual(["print"]);
    for (const s of ["rejected", "cancelled"] as OrderState[]) expect(allowedActions(order({ id: "1", state: s, requester: "admin" }), admin)).toEqual([]);
  });
  it("a 补单 (dispatched first) waits for its approval whatever its trip's state", () => {
    for (const s of ["dispatched", "out", "returned", "completed"] as OrderState[]) {
      const late = order({ id: "1", state: s, late: true, approved: false, requester: "demo" });
      expect(actionState(late, chuzhang, "approve").allowed, s).toBe(true);
      expect(actionState(late, demo, "approve").why).toBe("duty");
      expect(actionState({ ...late, approved: true }, chuzhang, "approve").why).toBe("state");
    }
    expect(actionState(order({ id: "1", state: "rejected", late: true, approved: false }), chuzhang, "approve").why).toBe("state");
  });
  it("a manual trip record is the dispatcher's, from dispatch until returned", () => {
    expect(allowedActions(order({ id: "1", state: "out" }), demo)).toEqual(["trip", "print"]);
    expect(actionState(order({ id: "1", state: "approved" }), demo, "trip").why).toBe("state");
    expect(actionState(order({ id: "1", state: "out" }), keyuan, "trip").why).toBe("duty");
  });
  it("someone else's request is cancelled by a dispatcher, not by another requester", () => {
    const o = order({ id: "1", state: "approved", requester: "someone" });
    expect(actionState(o, keyuan, "cancel").allowed).toBe(false);
    expect(actionState(o, demo, "cancel").allowed).toBe(true);
  });
});

describe("windows", () => {
  it("half-open windows: touching is not overlapping", () => {
    expect(overlaps({ start: 0, end: 10 }, { start: 10, end: 20 })).toBe(false);
    expect(overlaps({ start: 0, end: 11 }, { start: 10, end: 20 })).toBe(true);
    expect(overlaps({ start: 5, end: 6 }, { start: 0, end: 20 })).toBe(true);
    expect(overlaps({ start: 0, end: 20 }, { start: 5, end: 6 })).toBe(true);
  });
  it("agrees with a brute-force check on random windows", () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 50;
    for (let i = 0; i < 2000; i++) {
      const a = { start: rnd(), end: 0 };
      a.end = a.start + 1 + (rnd() % 10);
      const b = { start: rnd(), end: 0 };
      b.end = b.start + 1 + (rnd() % 10);
      let shared = false;
      for (let t = 0; t < 100; t++) if (t >= a.start && t < a.end && t >= b.start && t < b.end) shared = true;
      expect(overlaps(a, b)).toBe(shared);
    }
  });
  it("rejected and cancelled orders do not hold the vehicle", () => {
    const os = [
      order({ id: "a", vehicle: "V1", state: "approved" }),
      order({ id: "b", vehicle: "V1", state: "rejected" }),
      order({ id: "c", vehicle: "V1", state: "cancelled" }),
      order({ id: "d", vehicle: "V2", state: "dispatched" }),
    ];
    expect(conflicts(os, "V1", { start: T0 + 10 * H, end: T0 + 12 * H }).map((o) => o.id)).toEqual(["a"]);
    expect(conflicts(os, "V1", { start: T0 + 10 * H, end: T0 + 12 * H }, "a")).toEqual([]);
  });
});

describe("the dispatcher's timeline", () => {
  const from = T0;
  const to = T0 + 48 * H;
  it("stacks overlapping orders of one vehicle on lanes and flags the conflict", () => {
    const rows = layoutTimeline(
      [
        order({ id: "a", vehicle: "V1", plate: "川X1", start: from + 8 * H, end: from + 12 * H }),
        order({ id: "b", vehicle: "V1", plate: "川X1", start: from + 10 * H, end: from + 14 * H }),
        order({ id: "c", vehicle: "V1", plate: "川X1", start: from + 14 * H, end: from + 16 * H }),
      ],
      from,
      to,
    );
    expect(rows).toHaveLength(1);
    const [a, b, c] = rows[0].bars;
    expect([a.lane, b.lane, c.lane]).toEqual([0, 1, 0]);
    expect([a.conflict, b.conflict, c.conflict]).toEqual([true, true, false]);
    expect(rows[0].lanes).toBe(2);
    expect(a.left).toBeCloseTo((8 / 48) * 100);
    expect(a.width).toBeCloseTo((4 / 48) * 100);
  });
  it("puts the orders without a vehicle first, then the listed vehicles, then the others by plate", () => {
    const rows = layoutTimeline(
      [
        order({ id: "u", vehicle: null, state: "approved" }),
        order({ id: "z", vehicle: "V9", plate: "川X9" }),
        order({ id: "y", vehicle: "V8", plate: "川X8" }),
      ],
      from,
      to,
      [{ id: "V5", plate: "川X5" }],
    );
    expect(rows.map((r) => r.vehicle)).toEqual(["", "V5", "V8", "V9"]);
    expect(rows[1].bars).toEqual([]);
    expect(rows[0].bars[0].conflict).toBe(false);
  });
  it("clips an order reaching outside the window and skips one entirely outside", () => {
    const rows = layoutTimeline(
      [order({ id: "a", vehicle: "V1", start: from - 5 * H, end: from + 2 * H }), order({ id: "b", vehicle: "V1", start: to, end: to + H })],
      from,
      to,
    );
    expect(rows[0].bars).toHaveLength(1);
    const bar = rows[0].bars[0];
    expect(bar.left).toBe(0);
    expect(bar.clippedStart).toBe(true);
    expect(bar.width).toBeCloseTo((2 / 48) * 100);
  });
  it("keeps a very short order visible and inside the row", () => {
    const rows = layoutTimeline([order({ id: "a", vehicle: "V1", start: to - 1000, end: to })], from, to);
    const bar = rows[0].bars[0];
    expect(bar.width).toBeGreaterThan(0);
    expect(bar.left + bar.width).toBeLessThanOrEqual(100 + 1e-9);
  });
  it("refuses an empty window", () => {
    expect(() => layoutTimeline([], 5, 5)).toThrow();
  });
  it("ticks every 3 hours over two days", () => {
    const ticks = hourTicks(from, to, 3);
    expect(ticks).toHaveLength(16);
    expect(ticks[8]).toMatchObject({ hour: 0, left: 50 });
  });
});

describe("the request form", () => {
  const zone = "Asia/Shanghai";
  const toMs = (w: string) => zonedToMs(w, zone);
  const now = T0;
  const good = (): RequestDraft => ({ ...emptyDraft(), purpose: "参加会议", text: "市政务中心", start: "2026-12-03T09:00", end: "2026-12-03T11:30" });

  it("a complete draft has no problem and becomes the contract's body", () => {
    expect(draftProblems(good(), now, toMs)).toEqual({});
    const b = requestBody(good(), toMs);
    expect(b).toMatchObject({ purpose: "参加会议", passengers: 1, type: "local", vehicle_preferred: null, start: T0 + 9 * H, end: T0 + 11.5 * H });
    expect(b.destination).toEqual({ kind: "place", text: "市政务中心", place: "市政务中心", city: null });
  });
  it("says what is missing", () => {
    expect(draftProblems(emptyDraft(), now, toMs)).toEqual({ purpose: "purposeRequired", text: "placeRequired", start: "startRequired", end: "endRequired" });
  });
  it("checks the window, the passengers and the out-of-city type", () => {
    expect(draftProblems({ ...good(), end: "2026-12-03T08:00" }, now, toMs).end).toBe("endBeforeStart");
    expect(draftProblems({ ...good(), end: "2026-12-30T08:00" }, now, toMs).end).toBe("windowTooLong");
    expect(draftProblems(good(), T0 + 20 * H, toMs).end).toBe("endPast");
    expect(draftProblems({ ...good(), start: "not a time" }, now, toMs).start).toBe("startRequired");
    expect(draftProblems({ ...good(), passengers: 0 }, now, toMs).passengers).toBe("passengersMin");
    expect(draftProblems({ ...good(), passengers: 2.5 }, now, toMs).passengers).toBe("passengersMin");
    expect(draftProblems({ ...good(), passengers: 61 }, now, toMs).passengers).toBe("passengersMax");
    expect(draftProblems({ ...good(), purpose: "x".repeat(201) }, now, toMs).purpose).toBe("purposeTooLong");
    const out = { ...good(), kind: "out_of_city" as const, text: "", city: "" };
    expect(draftProblems(out, now, toMs)).toEqual({ city: "cityRequired", type: "outOfCityType" });
    const ok = { ...out, city: "成都市", type: "out_of_area" as const };
    expect(draftProblems(ok, now, toMs)).toEqual({});
    expect(requestBody(ok, toMs).destination).toEqual({ kind: "out_of_city", text: "成都市", place: null, city: "成都市" });
    expect(draftProblems({ ...good(), kind: "city", text: "" }, now, toMs)).toEqual({});
    expect((requestBody({ ...good(), kind: "city", text: "" }, toMs).destination as { text: string }).text).toBe("市内");
    expect(draftProblems({ ...good(), kind: "county", text: "" }, now, toMs).text).toBe("countyRequired");
  });
  it("suggests 出市 for a trip out of the city and takes it back otherwise", () => {
    expect(suggestedType("out_of_city", "local")).toBe("out_of_area");
    expect(suggestedType("city", "out_of_area")).toBe("local");
    expect(suggestedType("city", "holiday")).toBe("holiday");
  });
});

describe("an old server's order", () => {
  it("is read as pending or approved with its vehicle", () => {
    const o = normalizeOrder({ id: "x", org: "ga", vehicle: "V1", type: "local", start: 1, end: 2, approved: true, created_by: "op", reason: "会议" });
    expect(o).toMatchObject({ state: "approved", vehicle: "V1", requester: "op", purpose: "会议", approvals: [] });
    expect(normalizeOrder({ id: "y", vehicle: "V1", start: 1, end: 2, approved: false }).state).toBe("pending");
  });
});

describe("the 派车 menu", () => {
  const names = (duties: string[], role: "viewer" | "operator" | "admin") =>
    (navFor(role, undefined, duties).find((n) => n.name === "dispatch")?.children ?? []).map((c) => c.name);
  it("shows each duty its pages", () => {
    expect(names(["requester"], "viewer")).toEqual(["orderRequest", "orderMine"]);
    expect(names(["approver"], "operator")).toEqual(["orderInbox"]);
    expect(names(["requester", "dispatcher"], "operator")).toEqual(["orderRequest", "orderMine", "orderBoard"]);
    expect(names(["requester", "approver", "dispatcher"], "admin")).toHaveLength(4);
  });
  it("hides 派车 from a user without duties", () => {
    expect(navFor("operator", undefined, []).some((n) => n.name === "dispatch")).toBe(false);
  });
  it("guards the pages by duty and leads /dispatch to the first one", () => {
    expect(dutyForPath("/dispatch/inbox")).toBe("approver");
    expect(dutyForPath("/dispatch/order/ga/1")).toBeUndefined();
    expect(dispatchHome(["approver"])).toBe("/dispatch/inbox");
    expect(dispatchHome(["requester"])).toBe("/dispatch/request");
    expect(dispatchHome(["requester", "dispatcher"])).toBe("/dispatch/board");
    expect(dispatchHome([])).toBe("/monitor");
  });
});
