// The board's figures from GET /api/stats (web/api.py), pure: what each tile, chart and table
// row shows. 编制 (quota) comes from the vehicle records of a later issue: until then "—".
export interface OrgRow {
  org: string;
  vehicles: number;
  active_vehicles: number;
  mileage_km: number;
  trips: number;
  driving_s: number;
  alarms: Record<string, number>;
  authorised?: number | null;
}

export interface Stats {
  org: string;
  day: string;
  authorised: number | null;
  actual: number;
  online: number;
  moving: number;
  in_alarm: number;
  open_alarms: number;
  trips: number | null;
  mileage_km: number | null;
  alarms_by_kind: Record<string, number>;
  by_org: OrgRow[];
}

export function alarmsToday(s: Stats): number {
  return Object.values(s.alarms_by_kind).reduce((a, b) => a + b, 0);
}

/** Kinds by count, largest first (ties by the order of `kinds`), zeros left out. */
export function kindsByCount(byKind: Record<string, number>, kinds: readonly string[]): [string, number][] {
  const order = new Map(kinds.map((k, i) => [k, i]));
  return Object.entries(byKind)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1] || (order.get(a[0]) ?? 99) - (order.get(b[0]) ?? 99));
}

export function orgAlarms(r: OrgRow): number {
  return Object.values(r.alarms).reduce((a, b) => a + b, 0);
}

/** Panels the wall screen rotates through, and how long each stays. */
export const SCREEN_PANELS = ["overview", "byKind", "byOrg"] as const;
export type ScreenPanel = (typeof SCREEN_PANELS)[number];
export const SCREEN_ROTATE_MS = 10_000;
/** The board refreshes itself (a wall screen is never touched). */
export const REFRESH_MS = 30_000;

/** The panel shown `elapsedMs` after the wall screen started. */
export function panelAt(elapsedMs: number, rotateMs = SCREEN_ROTATE_MS): ScreenPanel {
  const i = Math.floor(Math.max(0, elapsedMs) / rotateMs) % SCREEN_PANELS.length;
  return SCREEN_PANELS[i];
}

/** ?screen=1 in the hash route's query or in the page's own query turns the wall screen on. */
export function screenRequested(routeQuery: Record<string, unknown>, search: string): boolean {
  const on = (v: unknown) => v === "1" || v === "true";
  return on(routeQuery.screen) || on(new URLSearchParams(search).get("screen"));
}
