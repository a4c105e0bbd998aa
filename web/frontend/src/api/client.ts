// The one way the application calls the HTTP API. It never fails silently: an ended session
// (401) raises the 会话已过期 banner through the session store, a network failure is reported to
// the connection store (连接中断), and every error reaches the caller as an ApiError.
import { connection } from "@/stores/connection";
import { session } from "@/stores/session";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly retryAfterS: number | null = null,
  ) {
    super(code);
  }
}

/** 401 error codes that mean the session ended (CONTRACTS.md "Session"). */
export const SESSION_ENDED = new Set(["session_expired", "session_revoked", "unauthorized"]);

export interface CallOptions {
  /** Do not treat a 401 as an ended session (the login call itself). */
  anonymous?: boolean;
  signal?: AbortSignal;
}

export async function api<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  opts: CallOptions = {},
): Promise<T> {
  const headers: Record<string, string> = {};
  if (session.token && !opts.anonymous) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r: Response;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: opts.signal,
    });
  } catch (e) {
    if ((e as Error).name !== "AbortError") connection.apiFailed(Date.now());
    throw new ApiError(0, (e as Error).name === "AbortError" ? "aborted" : "network");
  }
  connection.apiOk();
  let payload: unknown = null;
  const type = r.headers.get("content-type") ?? "";
  if (type.includes("json")) payload = await r.json().catch(() => null);
  if (!r.ok) {
    const code = String((payload as { error?: unknown } | null)?.error ?? r.status);
    const ra = r.headers.get("retry-after");
    if (r.status === 401 && !opts.anonymous && session.token) {
      session.end(code === "session_revoked" ? "session_revoked" : "session_expired");
    }
    throw new ApiError(r.status, code, ra ? Number(ra) : null);
  }
  return payload as T;
}

/** GET a file (CSV, XLSX) with the session's token, for a download. */
export async function download(path: string): Promise<Blob> {
  const r = await fetch(path, { headers: session.token ? { Authorization: `Bearer ${session.token}` } : {} });
  if (r.status === 401 && session.token) session.end("session_expired");
  if (!r.ok) throw new ApiError(r.status, String(r.status));
  return r.blob();
}
