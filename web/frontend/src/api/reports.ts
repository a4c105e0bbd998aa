// The reports and board API (CONTRACTS.md "Reports", served by web/reports_api.py).
import { api, ApiError, download } from "@/api/client";
import {
  boardQuery,
  normalizeSummary,
  reportPath,
  type BoardSummary,
  type Column,
  type ReportFilter,
  type ReportName,
} from "@/domain/reports";

export interface ReportInfo {
  name: string;
  title_zh: string;
  title_en: string;
}

export interface ReportTable {
  name: string;
  from: string;
  to: string;
  org: string;
  level: string;
  columns: Column[];
  rows: Record<string, unknown>[];
  totals: Record<string, unknown>;
  children_level: string | null;
}

export async function listReports(): Promise<ReportInfo[]> {
  const r = await api<{ reports: ReportInfo[] }>("GET", "/api/reports");
  return r.reports ?? [];
}

export async function getReport(name: ReportName, f: ReportFilter, signal?: AbortSignal): Promise<ReportTable> {
  const r = await api<ReportTable>("GET", reportPath(name, f), undefined, { signal });
  return {
    ...r,
    columns: r.columns ?? [],
    rows: r.rows ?? [],
    totals: r.totals ?? {},
    children_level: r.children_level ?? null,
  };
}

export function exportReport(name: ReportName, f: ReportFilter, format: "csv" | "xlsx", lang: "zh" | "en" = "zh"): Promise<Blob> {
  return download(reportPath(name, f, format, lang));
}

/** The live figures of GET /api/stats (web/api.py), the board's stand-in before the summary API. */
interface Stats {
  org: string;
  day: string;
  authorised?: number | null;
  actual: number;
  online: number;
  trips: number | null;
  mileage_km: number | null;
  alarms_by_kind: Record<string, number>;
}

export interface BoardData {
  summary: BoardSummary;
  /** True when the server has no /api/board/summary and the live /api/stats stood in. */
  fallback: boolean;
}

export async function getBoard(org: string | null, date?: string | null): Promise<BoardData> {
  const q = boardQuery(org, date).toString();
  try {
    const raw = await api<Record<string, unknown>>("GET", `/api/board/summary${q ? `?${q}` : ""}`);
    return { summary: normalizeSummary(raw), fallback: false };
  } catch (e) {
    // Only a route this server lacks falls back (web/app.py answers "no such API route").
    if (!(e instanceof ApiError) || e.status !== 404 || e.code !== "no such API route") throw e;
  }
  const s = await api<Stats>("GET", `/api/stats${org ? `?org=${encodeURIComponent(org)}` : ""}`);
  const alarms = Object.values(s.alarms_by_kind ?? {}).reduce((a, b) => a + b, 0);
  return {
    fallback: true,
    summary: normalizeSummary({
      org: s.org,
      date: s.day,
      quota: s.authorised ?? null,
      actual: s.actual,
      online: s.online,
      trips: s.trips,
      alarms,
      km: s.mileage_km,
      costs: null,
      alarms_by_kind: s.alarms_by_kind,
    }),
  };
}
