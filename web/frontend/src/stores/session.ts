// The login and what /api/me says about it. A session that ends (expired, revoked) is never
// turned silently into the login page: `ended` raises the full-screen banner, and only the
// operator's click on 重新登录 goes back to the login form.
import { reactive } from "vue";
import type { Me, Role } from "@/api/types";

export type SessionEnd = "session_expired" | "session_revoked";
const TOKEN_KEY = "fw.token";

interface SessionState {
  token: string | null;
  me: Me | null;
  ended: SessionEnd | null;
  end(reason: SessionEnd): void;
  start(token: string): void;
  clear(): void;
}

function stored(): string | null {
  return typeof sessionStorage === "undefined" ? null : sessionStorage.getItem(TOKEN_KEY);
}

export const session: SessionState = reactive({
  token: stored(),
  me: null as Me | null,
  ended: null as SessionEnd | null,
  end(reason: SessionEnd) {
    if (session.token === null || session.ended !== null) return;
    session.ended = reason;
  },
  start(token: string) {
    session.token = token;
    session.ended = null;
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    session.token = null;
    session.me = null;
    session.ended = null;
    sessionStorage.removeItem(TOKEN_KEY);
  },
});

const ORDER: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };

/** Whether the role may do what `need` may (viewer < operator < admin). */
export function roleAtLeast(role: Role | undefined, need: Role): boolean {
  return role !== undefined && ORDER[role] >= ORDER[need];
}

/** The fleet's time zone, from /api/me. */
export function fleetZone(): string {
  return session.me?.settings?.timezone ?? session.me?.timezone ?? "Asia/Shanghai";
}

/** Organisation name by id (falls back to the id). */
export function orgName(id: string): string {
  return session.me?.orgs.find((o) => o.id === id)?.name ?? id;
}
