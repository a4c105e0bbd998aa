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
  children?: NavItem[];
}

export const NAV: NavItem[] = [
  { name: "monitor", path: "/monitor", role: "viewer" },
  { name: "alarms", path: "/alarms", role: "viewer" },
  { name: "playback", path: "/playback", role: "viewer" },
  { name: "board", path: "/board", role: "viewer" },
  { name: "vehicles", path: "/vehicles", role: "viewer", slot: true },
  { name: "drivers", path: "/drivers", role: "viewer", slot: true },
  { name: "dispatch", path: "/dispatch", role: "operator", slot: true },
  { name: "reports", path: "/reports", role: "viewer", slot: true },
  { name: "costs", path: "/costs", role: "operator", slot: true },
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

/** The menu as the role sees it (a parent without visible children disappears). */
export function navFor(role: Role | undefined, items: NavItem[] = NAV): NavItem[] {
  const out: NavItem[] = [];
  for (const it of items) {
    if (!roleAtLeast(role, it.role)) continue;
    if (it.children) {
      const kids = navFor(role, it.children);
      if (kids.length) out.push({ ...it, children: kids });
    } else {
      out.push(it);
    }
  }
  return out;
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
