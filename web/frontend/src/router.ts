import { createRouter, createWebHashHistory, type RouteRecordRaw } from "vue-router";
import { NAV, roleForPath } from "@/nav";
import { roleAtLeast, session } from "@/stores/session";

// Hash history: the server serves index.html at "/" only, and a reload keeps the view.
// The records issue fills the 车辆档案 and 驾驶员档案 slots.
const FILLED: Record<string, () => Promise<unknown>> = {
  vehicles: () => import("@/views/Vehicles.vue"),
  drivers: () => import("@/views/Drivers.vue"),
  costs: () => import("@/views/Costs.vue"),
};
const slotRoutes: RouteRecordRaw[] = NAV.filter((n) => n.slot && !FILLED[n.name]).map((n) => ({
  path: n.path,
  name: n.name,
  component: () => import("@/views/EmptySlot.vue"),
  props: { name: n.name },
}));

const routes: RouteRecordRaw[] = [
  { path: "/", redirect: "/monitor" },
  { path: "/monitor", name: "monitor", component: () => import("@/views/Monitor.vue") },
  { path: "/alarms", name: "alarms", component: () => import("@/views/AlarmHistory.vue") },
  { path: "/playback", name: "playback", component: () => import("@/views/Playback.vue") },
  { path: "/board", name: "board", component: () => import("@/views/Board.vue") },
  ...slotRoutes,
  { path: "/vehicles", name: "vehicles", component: FILLED.vehicles },
  { path: "/drivers", name: "drivers", component: FILLED.drivers },
  { path: "/costs", name: "costs", component: FILLED.costs },
  { path: "/system", redirect: "/system/fences" },
  { path: "/system/users", name: "users", component: () => import("@/views/SystemUsers.vue") },
  { path: "/system/fences", name: "fences", component: () => import("@/views/SystemFences.vue") },
  {
    path: "/system/dead-letters",
    name: "deadLetters",
    component: () => import("@/views/SystemDeadLetters.vue"),
  },
  { path: "/system/audit", name: "audit", component: () => import("@/views/SystemAudit.vue") },
  { path: "/:rest(.*)*", redirect: "/monitor" },
];

export const router = createRouter({ history: createWebHashHistory(), routes });

router.beforeEach((to) => {
  const need = roleForPath(to.path);
  if (need && session.me && !roleAtLeast(session.me.user.role, need)) return "/monitor";
  return true;
});
