// The application's navigation, role-aware: what each role sees in the menu and may open.
import type { Role } from "@/api/types";
import { roleAtLeast } from "@/stores/session";

export interface NavItem {
  /** Route name and i18n key under nav.* */
  name: string;
  path: string;
  role: Role;
  /** An empty slot a later issue fills. */
  slot?: boolean;
  /** Shown only to a user holding this duty (#16: requester, approver, dispatcher). */
  duty?: string;
  children?: NavItem[];
}

export const NAV: NavItem[] = [
  { name: "monitor", path: "/monitor", role: "viewer" },
  { name: "alarms", path: "/alarms", role: "viewer" },
  { name: "playback", path: "/playback", role: "viewer" },
  { name: "board", path: "/board", role: "viewer" },
  { name: "vehicles", path: "/vehicles", role: "viewer" },
  { name: "drivers", path: "/drivers", role: "viewer" },
  {
    name: "dispatch",
    path: "/dispatch",
    role: "viewer",
    children: [
      { name: "orderRequest", path: "/dispatch/request", role: "viewer", duty: "requester" },
      { name: "orderMine", path: "/dispatch/mine", role: "viewer", duty: "requester" },
      { name: "orderInbox", path: "/dispatch/inbox", role: "viewer", duty: "approver" },
      { name: "orderBoard", path: "/dispatch/board", role: "viewer", duty: "dispatcher" },
    ],
  },
  { name: "reports", path: "/reports", role: "viewer" },
  { name: "costs", path: "/costs", role: "operator" },
  {
    name: "system",
    path: "/system",
    role: "operator",
    children: [
      { name: "users", path: "/system/users", role: "admin" },
      { name: "fences", path: "/system/fences", role: "operator" },
      { name: "deadLetters", path: "/system/dead-letters", role: "operator" },
      { name: "audit", path: "/system/audit", role: "admin" },
    ],
  },
];

/** The menu as the role and duties see it (a parent without visible children disappears). */
export function navFor(role: Role | undefined, items: NavItem[] = NAV, duties: readonly string[] = []): NavItem[] {
  const out: NavItem[] = [];
  for (const it of items) {
    if (!roleAtLeast(role, it.role)) continue;
    if (it.duty && !duties.includes(it.duty)) continue;
    if (it.children) {
      const kids = navFor(role, it.children, duties);
      if (kids.length) out.push({ ...it, children: kids });
    } else {
      out.push(it);
    }
  }
  return out;
}

/** The duty a path needs (the 派车 pages; undefined: none). */
export function dutyForPath(path: string, items: NavItem[] = NAV): string | undefined {
  for (const it of items) {
    if (it.children) {
      const d = dutyForPath(path, it.children);
      if (d) return d;
    }
    if (path === it.path) return it.duty;
  }
  return undefined;
}

/** Where /dispatch leads: the page of the user's busiest duty — 调度台 for a dispatcher, then
 * 待审批 for an approver, then 用车申请 ("/monitor" without any). */
export function dispatchHome(duties: readonly string[]): string {
  const kids = NAV.find((n) => n.name === "dispatch")?.children ?? [];
  for (const duty of ["dispatcher", "approver", "requester"]) {
    const k = duties.includes(duty) ? kids.find((c) => c.duty === duty) : undefined;
    if (k) return k.path;
  }
  return "/monitor";
}

/** The role a path needs (the router guards with it). */
export function roleForPath(path: string, items: NavItem[] = NAV): Role | undefined {
  for (const it of items) {
    if (it.children) {
      const r = roleForPath(path, it.children);
      if (r) return r;
    }
    if (path === it.path) return it.role;
  }
  return undefined;
}
