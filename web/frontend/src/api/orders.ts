// The order endpoints (CONTRACTS.md "Order JSON"): the calls of the 派车 pages. Errors reach the
// caller as ApiError whose code is the server's message ({"error": "..."}); 403 and 409 keep
// their status so a page can say "not yours to approve" or "the order moved on".
import { api, ApiError } from "@/api/client";
import type { Alarm } from "@/api/types";
import { normalizeOrder, type Order, type Who } from "@/domain/orders";
import { session } from "@/stores/session";
import type { TrackColumns } from "@/views/parts/playback";

export interface OrderQuery {
  state?: string;
  org?: string;
  from?: number;
  to?: number;
  inbox?: boolean;
  mine?: boolean;
}

export interface OrderTrack {
  points: TrackColumns;
  km: number | null;
  first: number | null;
  last: number | null;
}

export interface OrderDetail extends Order {
  track: OrderTrack | null;
  alarms: Alarm[];
}

export interface SuggestVehicle {
  id: string;
  plate: string;
  org: string;
  distance_m: number | null;
  free: boolean;
  why: string;
}

export interface SuggestDriver {
  id: string;
  name: string;
  org: string;
  free: boolean;
}

export interface Suggestion {
  vehicles: SuggestVehicle[];
  drivers: SuggestDriver[];
}

function qs(q: Record<string, string | number | boolean | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null || v === "" || v === false) continue;
    p.set(k, v === true ? "1" : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

function orderPath(id: string, org?: string, tail = ""): string {
  return `/api/orders/${encodeURIComponent(id)}${tail}${qs({ org })}`;
}

export async function listOrders(q: OrderQuery = {}): Promise<Order[]> {
  const r = await api<{ orders: Record<string, unknown>[] }>("GET", `/api/orders${qs({ ...q })}`);
  return r.orders.map(normalizeOrder);
}

export async function getOrder(id: string, org?: string): Promise<OrderDetail> {
  const r = await api<Record<string, unknown>>("GET", orderPath(id, org));
  return { ...normalizeOrder(r), track: (r.track ?? null) as OrderTrack | null, alarms: (r.alarms ?? []) as Alarm[] };
}

export async function createOrder(body: Record<string, unknown>): Promise<Order> {
  return normalizeOrder(await api<Record<string, unknown>>("POST", "/api/orders", body));
}

async function act(o: Pick<Order, "id" | "org">, verb: string, body: Record<string, unknown> = {}): Promise<Order> {
  return normalizeOrder(await api<Record<string, unknown>>("POST", orderPath(o.id, o.org, `/${verb}`), body));
}

export const approveOrder = (o: Pick<Order, "id" | "org">) => act(o, "approve");
export const rejectOrder = (o: Pick<Order, "id" | "org">, reason: string) => act(o, "reject", { reason });
export const cancelOrder = (o: Pick<Order, "id" | "org">, reason: string) => act(o, "cancel", { reason });
export const dispatchOrder = (o: Pick<Order, "id" | "org">, vehicle: string, driver: string) => act(o, "dispatch", { vehicle, driver });
export const recordTrip = (o: Pick<Order, "id" | "org">, trip: { out_at: number; back_at: number; km: number }) => act(o, "trip", trip);

/** 补单: dispatched at once (dispatcher); the request is approved afterwards. */
export async function emergencyOrder(body: Record<string, unknown>): Promise<Order> {
  return normalizeOrder(await api<Record<string, unknown>>("POST", "/api/orders/emergency", body));
}

export async function suggest(start: number, end: number, org?: string): Promise<Suggestion> {
  return api<Suggestion>("GET", `/api/orders/suggest${qs({ start, end, org })}`);
}

/** The logged-in user as the order rules see them (login name, duties). */
export function whoAmI(): Who {
  const u = session.me?.user;
  return { username: u?.username ?? u?.name ?? "", duties: u?.duties ?? [] };
}

/** The i18n message for a refused call: 403 "not allowed", 409 "the order moved on", else failed. */
export function refusalKey(e: unknown): string {
  const s = e instanceof ApiError ? e.status : 0;
  return s === 403 ? "orders.forbidden" : s === 409 ? "orders.stale" : "orders.failed";
}
