// 运行费用 calls (web/costs_api.py). Refusals carry the server's Chinese message (call()).
import { call, saveFile } from "@/views/VehiclesRecords";

export const COST_KINDS = ["fuel", "insurance", "repair", "toll", "parking"] as const;
export type CostKind = (typeof COST_KINDS)[number];
export type ByKind = Record<CostKind, number>;

export interface BadRow {
  line: number;
  reason: string;
  row: Record<string, unknown>;
}
export interface ImportResult {
  id: string;
  imported: number;
  duplicates: number;
  bad: BadRow[];
  anomalies: number;
}
export interface SummaryRow {
  org?: string;
  vehicle?: string;
  plate?: string;
  name: string;
  total: number;
  by_kind: ByKind;
  km: number;
  trips: number;
  per_km: number | null;
  per_trip: number | null;
}
export interface Summary extends SummaryRow {
  month: string;
  org: string;
  level: string;
  budget: number | null;
  year_to_date: number;
  budget_used_share: number | null;
  rows: SummaryRow[];
}
export interface Anomaly {
  id: string;
  kind: string;
  vehicle: string;
  org: string;
  ts: number;
  detail: { text?: string; plate?: string; [k: string]: unknown };
}
export interface CostItem {
  fingerprint: string;
  kind: CostKind;
  vehicle: string;
  plate: string;
  ts: number;
  amount: number;
  supplier: string;
  fields: Record<string, unknown>;
}
export interface VehicleCosts {
  vehicle: string;
  month: string;
  total: number;
  by_kind: ByKind;
  km: number;
  trips: number;
  per_km: number | null;
  per_trip: number | null;
  items: CostItem[];
  anomalies: Anomaly[];
}

export function importCosts(kind: CostKind, supplier: string, file: Blob, name: string): Promise<ImportResult> {
  const q = new URLSearchParams({ kind, supplier: supplier || "default", filename: name });
  return call<ImportResult>("POST", `/api/costs/import?${q}`, undefined, file);
}

export function costSummary(month: string, level: "unit" | "vehicle", org?: string): Promise<Summary> {
  const q = new URLSearchParams({ month, level });
  if (org) q.set("org", org);
  return call<Summary>("GET", `/api/costs/summary?${q}`);
}

export async function costAnomalies(month: string, org?: string): Promise<Anomaly[]> {
  const q = new URLSearchParams({ month });
  if (org) q.set("org", org);
  return (await call<{ anomalies: Anomaly[] }>("GET", `/api/costs/anomalies?${q}`)).anomalies;
}

export function recheck(month: string): Promise<{ new: number }> {
  return call<{ new: number }>("POST", `/api/costs/check?month=${month}`);
}

export function vehicleCosts(id: string, month: string): Promise<VehicleCosts> {
  return call<VehicleCosts>("GET", `/api/vehicles/${encodeURIComponent(id)}/costs?month=${month}`);
}

export function downloadTemplate(kind: CostKind, name: string): Promise<void> {
  return saveFile(`/api/costs/templates/${kind}?format=xlsx`, name);
}

export function exportMonth(month: string, org: string | undefined, name: string): Promise<void> {
  const q = new URLSearchParams({ month });
  if (org) q.set("org", org);
  return saveFile(`/api/costs/export?${q}`, name);
}

/** ``YYYY-MM`` of a moment in the fleet's time zone. */
export function monthOf(ms: number, zone: string): string {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit" }).formatToParts(new Date(ms));
  const y = parts.find((p) => p.type === "year")?.value ?? "1970";
  const m = parts.find((p) => p.type === "month")?.value ?? "01";
  return `${y}-${m}`;
}
