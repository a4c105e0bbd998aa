// The rules of the 派车 pages (在线审批 / 集中调度), pure: which buttons a user gets on an order
// in a state (CONTRACTS.md "Order JSON", duties), whether two time windows overlap, how the
// dispatcher's timeline lays orders out, and the request form's checks. No Vue, no fetch.
import { formatTime } from "@/format/time";

export type Duty = "requester" | "approver" | "dispatcher";
export const DUTIES: readonly Duty[] = ["requester", "approver", "dispatcher"];

export type OrderState = "pending" | "approved" | "dispatched" | "out" | "returned" | "completed" | "rejected" | "cancelled";
export const ORDER_STATES: readonly OrderState[] = ["pending", "approved", "dispatched", "out", "returned", "completed", "rejected", "cancelled"];

/** The excuse table's order types (rules/config.py ORDER_TYPES). */
export type OrderType = "local" | "out_of_area" | "holiday" | "overnight";
export const ORDER_TYPES: readonly OrderType[] = ["local", "out_of_area", "holiday", "overnight"];

export type DestinationKind = "place" | "county" | "city" | "out_of_city";
export const DESTINATION_KINDS: readonly DestinationKind[] = ["place", "county", "city", "out_of_city"];

export interface Destination {
  kind: DestinationKind;
  text: string;
  place: string | null;
  city: string | null;
}

export interface Approval {
  by: string;
  at: number;
  decision: "approve" | "reject";
  reason: string;
  step: string;
}

export interface Order {
  id: string;
  org: string;
  state: OrderState;
  type: OrderType;
  purpose: string;
  passengers: number;
  passenger_names: string;
  destination: Destination;
  region: string | null;
  start: number;
  end: number;
  vehicle_preferred: string | null;
  vehicle: string | null;
  plate: string | null;
  driver: string | null;
  driver_name: string | null;
  requester: string;
  created_at: number;
  approvals: Approval[];
  next_step: string | null;
  dispatched_by: string | null;
  dispatched_at: number | null;
  out_at: number | null;
  back_at: number | null;
  km: number | null;
  trip_source: "gps" | "manual" | null;
  late: boolean;
  approved: boolean;
  vehicle_id: string | null;
}

/** Who looks at the order: their login name, duties and role. */
export interface Who {
  username: string;
  duties: readonly string[];
}

export type Action = "approve" | "reject" | "dispatch" | "cancel" | "trip" | "print";
export const ACTIONS: readonly Action[] = ["approve", "reject", "dispatch", "cancel", "trip", "print"];

/** An action the user may take now, or the reason (an i18n key under orders.why.*) they may not. */
export interface ActionState {
  action: Action;
  allowed: boolean;
  /** Shown next to a button that is not there (my own request, wrong duty, wrong state). */
  why: string | null;
}

/** What the action rules read of an order (late and approved: a 补单 waiting for its request). */
export type Decidable = Pick<Order, "state" | "requester"> & Partial<Pick<Order, "late" | "approved">>;

const LATE_DECIDABLE: ReadonlySet<OrderState> = new Set(["dispatched", "out", "returned", "completed"]);

/** Pending, or a 补单 (dispatched first) whose request is not approved yet. */
export function awaitsDecision(o: Decidable): boolean {
  return o.state === "pending" || (Boolean(o.late) && !o.approved && LATE_DECIDABLE.has(o.state));
}

const CANCELLABLE: ReadonlySet<OrderState> = new Set(["pending", "approved", "dispatched"]);
const TRIP_STATES: ReadonlySet<OrderState> = new Set(["dispatched", "out", "returned"]);
const PRINTABLE: ReadonlySet<OrderState> = new Set(["approved", "dispatched", "out", "returned", "completed"]);

export function hasDuty(who: Who, duty: Duty): boolean {
  return who.duties.includes(duty);
}

/**
 * What the user can do with the order in its state. The server decides (403 / 409); this only
 * decides which buttons are drawn and what a missing one is replaced by:
 * - approve / reject: pending (or a 补单 not yet approved, whatever its trip's state), an
 *   approver, never the requester (why: "own");
 * - dispatch: approved, a dispatcher;
 * - cancel: pending / approved / dispatched, the requester or a dispatcher;
 * - trip (manual 出车/回车 record): dispatched / out / returned, a dispatcher;
 * - print (派车单): approved and later, anyone who sees the order.
 */
export function actionState(o: Decidable, who: Who, action: Action): ActionState {
  const mine = o.requester === who.username;
  const no = (why: string): ActionState => ({ action, allowed: false, why });
  const yes: ActionState = { action, allowed: true, why: null };
  switch (action) {
    case "approve":
    case "reject":
      if (!awaitsDecision(o)) return no("state");
      if (!hasDuty(who, "approver")) return no("duty");
      if (mine) return no("own");
      return yes;
    case "dispatch":
      if (o.state !== "approved") return no("state");
      if (!hasDuty(who, "dispatcher")) return no("duty");
      return yes;
    case "cancel":
      if (!CANCELLABLE.has(o.state)) return no("state");
      if (!mine && !hasDuty(who, "dispatcher")) return no("duty");
      return yes;
    case "trip":
      if (!TRIP_STATES.has(o.state)) return no("state");
      if (!hasDuty(who, "dispatcher")) return no("duty");
      return yes;
    case "print":
      return PRINTABLE.has(o.state) ? yes : no("state");
  }
}

/** The actions the user may take now, in the order the buttons are drawn. */
export function allowedActions(o: Decidable, who: Who): Action[] {
  return ACTIONS.filter((a) => actionState(o, who, a).allowed);
}

/** Whether the page should say "you cannot approve your own request" (instead of the buttons). */
export function ownApprovalBlocked(o: Decidable, who: Who): boolean {
  return actionState(o, who, "approve").why === "own";
}

// -- time windows ---------------------------------------------------------------------------

/** Half-open windows [start, end) overlap: one ending when the other starts does not. */
export function overlaps(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start < b.end && b.start < a.end;
}

/** States in which an order holds its vehicle (a rejected or cancelled one frees it). */
export const HOLDS_VEHICLE: ReadonlySet<OrderState> = new Set(["approved", "dispatched", "out", "returned"]);

/** Orders of `orders` that hold `vehicle` in a window overlapping `w` (the order itself excluded). */
export function conflicts(orders: readonly Order[], vehicle: string, w: { start: number; end: number }, except?: string): Order[] {
  return orders.filter((o) => o.vehicle === vehicle && o.id !== except && HOLDS_VEHICLE.has(o.state) && overlaps(o, w));
}

// -- the dispatcher's timeline ---------------------------------------------------------------

export interface Bar {
  order: Order;
  /** Percent of the row, clipped to the window. */
  left: number;
  width: number;
  /** 0-based line inside the row: overlapping orders of one vehicle stack. */
  lane: number;
  /** It overlaps another order holding the same vehicle. */
  conflict: boolean;
  /** It starts before / ends after the window shown. */
  clippedStart: boolean;
  clippedEnd: boolean;
}

export interface TimelineRow {
  /** Vehicle id, or "" for the orders not yet given a vehicle (待派车). */
  vehicle: string;
  plate: string;
  bars: Bar[];
  lanes: number;
}

/** A bar is never drawn narrower than this (percent), so a short order stays clickable. */
export const MIN_BAR_PCT = 0.6;

/**
 * Lay the orders that touch [from, to) out on rows: first the orders without a vehicle (one row,
 * plate ""), then one row per vehicle in `vehicles` order (vehicles with orders not listed are
 * appended, sorted by plate). In a row, bars go on the first lane where they overlap nothing
 * (greedy by start); a bar overlapping another order that holds the vehicle is a conflict.
 */
export function layoutTimeline(
  orders: readonly Order[],
  from: number,
  to: number,
  vehicles: readonly { id: string; plate: string }[] = [],
): TimelineRow[] {
  if (!(to > from)) throw new Error("the timeline needs from < to");
  const span = to - from;
  const shown = orders.filter((o) => overlaps(o, { start: from, end: to }));
  const byVehicle = new Map<string, Order[]>();
  for (const o of shown) {
    const k = o.vehicle ?? "";
    const list = byVehicle.get(k);
    if (list) list.push(o);
    else byVehicle.set(k, [o]);
  }
  const plates = new Map(vehicles.map((v) => [v.id, v.plate]));
  for (const o of shown) if (o.vehicle && o.plate && !plates.has(o.vehicle)) plates.set(o.vehicle, o.plate);
  const ids: string[] = [];
  if (byVehicle.has("")) ids.push("");
  for (const v of vehicles) if (!ids.includes(v.id)) ids.push(v.id);
  const extra = [...byVehicle.keys()].filter((k) => k !== "" && !ids.includes(k));
  extra.sort((a, b) => (plates.get(a) ?? a).localeCompare(plates.get(b) ?? b));
  ids.push(...extra);

  return ids.map((id) => {
    const list = [...(byVehicle.get(id) ?? [])].sort((a, b) => a.start - b.start || a.end - b.end || a.id.localeCompare(b.id));
    const laneEnds: number[] = [];
    const bars: Bar[] = list.map((o) => {
      let lane = laneEnds.findIndex((end) => end <= o.start);
      if (lane < 0) {
        lane = laneEnds.length;
        laneEnds.push(o.end);
      } else {
        laneEnds[lane] = o.end;
      }
      const s = Math.max(o.start, from);
      const e = Math.min(o.end, to);
      const left = ((s - from) / span) * 100;
      const width = Math.max(MIN_BAR_PCT, ((e - s) / span) * 100);
      const conflict = id !== "" && HOLDS_VEHICLE.has(o.state) && list.some((p) => p !== o && HOLDS_VEHICLE.has(p.state) && overlaps(o, p));
      return { order: o, left, width: Math.min(width, 100 - left), lane, conflict, clippedStart: o.start < from, clippedEnd: o.end > to };
    });
    return { vehicle: id, plate: id === "" ? "" : (plates.get(id) ?? id), bars, lanes: Math.max(1, laneEnds.length) };
  });
}

/** Hour ticks of the timeline: {at, left %, label "HH"} every `stepH` hours from `from`. */
export function hourTicks(from: number, to: number, stepH = 3): { at: number; left: number; hour: number }[] {
  const out: { at: number; left: number; hour: number }[] = [];
  const step = stepH * 3_600_000;
  for (let at = from, i = 0; at < to; at += step, i++) {
    out.push({ at, left: ((at - from) / (to - from)) * 100, hour: (i * stepH) % 24 });
  }
  return out;
}

// -- the request form -------------------------------------------------------------------------

export interface RequestDraft {
  purpose: string;
  passengers: number | null;
  passenger_names: string;
  kind: DestinationKind;
  text: string;
  city: string;
  type: OrderType;
  /** "YYYY-MM-DDTHH:mm" in the fleet's zone (a datetime-local input). */
  start: string;
  end: string;
  /** A vehicle id, or "" for 任意车辆. */
  vehicle_preferred: string;
}

export const MAX_PURPOSE = 200;
export const MAX_PASSENGERS = 60;
/** A request spans at most this long (a longer trip is several orders). */
export const MAX_WINDOW_DAYS = 15;

export function emptyDraft(): RequestDraft {
  return { purpose: "", passengers: 1, passenger_names: "", kind: "place", text: "", city: "", type: "local", start: "", end: "", vehicle_preferred: "" };
}

/**
 * The form's problems, field → i18n key under orders.err.* (empty: the request can be sent).
 * `toMs` turns the inputs' wall-clock text into epoch ms (fleet zone) and throws on bad text.
 */
export function draftProblems(d: RequestDraft, now: number, toMs: (wall: string) => number): Record<string, string> {
  const p: Record<string, string> = {};
  const purpose = d.purpose.trim();
  if (!purpose) p.purpose = "purposeRequired";
  else if (purpose.length > MAX_PURPOSE) p.purpose = "purposeTooLong";
  if (d.passengers == null || !Number.isInteger(d.passengers) || d.passengers < 1) p.passengers = "passengersMin";
  else if (d.passengers > MAX_PASSENGERS) p.passengers = "passengersMax";
  if ((d.kind === "place" || d.kind === "county") && !d.text.trim()) p.text = d.kind === "place" ? "placeRequired" : "countyRequired";
  if (d.kind === "out_of_city" && !d.city.trim()) p.city = "cityRequired";
  if (d.kind === "out_of_city" && d.type !== "out_of_area") p.type = "outOfCityType";
  let start = NaN;
  let end = NaN;
  try {
    start = d.start ? toMs(d.start) : NaN;
  } catch {
    start = NaN;
  }
  try {
    end = d.end ? toMs(d.end) : NaN;
  } catch {
    end = NaN;
  }
  if (!Number.isFinite(start)) p.start = "startRequired";
  if (!Number.isFinite(end)) p.end = "endRequired";
  if (Number.isFinite(start) && Number.isFinite(end)) {
    if (end <= start) p.end = "endBeforeStart";
    else if (end - start > MAX_WINDOW_DAYS * 86_400_000) p.end = "windowTooLong";
    else if (end < now) p.end = "endPast";
  }
  return p;
}

/** The body of POST /api/orders for a checked draft. */
export function requestBody(d: RequestDraft, toMs: (wall: string) => number): Record<string, unknown> {
  // The server wants a text: a region without a named place is named by the region itself.
  const text = d.text.trim() || (d.kind === "out_of_city" ? d.city.trim() : d.kind === "city" ? "市内" : "");
  return {
    purpose: d.purpose.trim(),
    passengers: d.passengers,
    passenger_names: d.passenger_names.trim(),
    destination: {
      kind: d.kind,
      text,
      place: d.kind === "place" ? d.text.trim() : null,
      city: d.kind === "out_of_city" ? d.city.trim() : null,
    },
    type: d.type,
    start: toMs(d.start),
    end: toMs(d.end),
    vehicle_preferred: d.vehicle_preferred || null,
  };
}

/** The order type a destination suggests when the requester has not chosen one. */
export function suggestedType(kind: DestinationKind, current: OrderType): OrderType {
  if (kind === "out_of_city") return "out_of_area";
  if (current === "out_of_area") return "local";
  return current;
}

/** Tag colour (Element Plus type) of a state. */
export function stateTag(s: OrderState): "success" | "warning" | "info" | "danger" | "primary" {
  switch (s) {
    case "pending":
      return "warning";
    case "approved":
    case "dispatched":
      return "primary";
    case "out":
    case "returned":
    case "completed":
      return "success";
    case "rejected":
      return "danger";
    default:
      return "info";
  }
}

/** The last approval of the order that approved it (the 审批人 on the 派车单), if any. */
export function approvers(o: Pick<Order, "approvals">): string[] {
  return o.approvals.filter((a) => a.decision === "approve").map((a) => a.by);
}

/** Fill what an older server leaves out (the old order JSON: vehicle, approved, reason). */
export function normalizeOrder(raw: Record<string, unknown>): Order {
  const r = raw as Partial<Order> & Record<string, unknown>;
  const state = (r.state ?? (r.approved ? "approved" : "pending")) as OrderState;
  const dest = (r.destination ?? null) as Destination | null;
  return {
    id: String(r.id ?? ""),
    org: String(r.org ?? ""),
    state,
    type: (r.type ?? "local") as OrderType,
    purpose: String(r.purpose ?? r.reason ?? ""),
    passengers: Number(r.passengers ?? 0),
    passenger_names: String(r.passenger_names ?? ""),
    destination: dest ?? { kind: "place", text: "", place: null, city: null },
    region: (r.region ?? null) as string | null,
    start: Number(r.start),
    end: Number(r.end),
    vehicle_preferred: (r.vehicle_preferred ?? null) as string | null,
    vehicle: (r.vehicle ?? r.vehicle_id ?? null) as string | null,
    plate: (r.plate ?? null) as string | null,
    driver: (r.driver ?? null) as string | null,
    driver_name: (r.driver_name ?? null) as string | null,
    requester: String(r.requester ?? r.created_by ?? ""),
    created_at: Number(r.created_at ?? 0),
    approvals: (r.approvals ?? []) as Approval[],
    next_step: (r.next_step ?? null) as string | null,
    dispatched_by: (r.dispatched_by ?? null) as string | null,
    dispatched_at: (r.dispatched_at ?? null) as number | null,
    out_at: (r.out_at ?? null) as number | null,
    back_at: (r.back_at ?? null) as number | null,
    km: (r.km ?? null) as number | null,
    trip_source: (r.trip_source ?? null) as Order["trip_source"],
    late: Boolean(r.late),
    approved: Boolean(r.approved ?? state !== "pending"),
    vehicle_id: (r.vehicle_id ?? r.vehicle ?? null) as string | null,
  };
}

/** "12-03 09:00 – 11:30" (same day) or "12-03 09:00 – 12-04 18:00", in the fleet's zone. */
export function windowText(start: number, end: number, zone: string): string {
  const a = formatTime(start, zone);
  const b = formatTime(end, zone);
  const head = `${a.slice(5, 16)} – `;
  return a.slice(0, 10) === b.slice(0, 10) ? head + b.slice(11, 16) : head + b.slice(5, 16);
}

/** The destination as one line: "出市 · 成都市 · 四川大学" / "市政务中心" / "县（区）内 · 武胜县". */
export function destinationText(d: Destination, kindName: (k: DestinationKind) => string): string {
  const parts: string[] = [];
  if (d.kind !== "place") parts.push(kindName(d.kind));
  if (d.kind === "out_of_city" && d.city) parts.push(d.city);
  if (d.text && d.text !== d.city) parts.push(d.text);
  return parts.join(" · ") || "—";
}
