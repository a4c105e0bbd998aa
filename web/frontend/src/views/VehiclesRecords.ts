// Calls of the record views that need the server's Chinese message on a refusal (the shared
// client keeps only the error code): a refused form shows exactly what the office must fix.
import { session } from "@/stores/session";
import { refusal } from "./VehiclesMessages";

export class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function call<T = unknown>(method: string, path: string, body?: unknown, raw?: Blob): Promise<T> {
  const headers: Record<string, string> = {};
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  if (r.status === 401 && session.token) session.end("session_expired");
  if (!r.ok) throw new Refused(r.status, await refusal(r));
  return (await r.json()) as T;
}

/** Save a file the server made (export) under ``name``. */
export async function saveFile(path: string, name: string): Promise<void> {
  const r = await fetch(path, { headers: session.token ? { Authorization: `Bearer ${session.token}` } : {} });
  if (!r.ok) throw new Refused(r.status, await refusal(r));
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
