import { defineComponent, onMounted } from "vue";
import { createRouter, createWebHashHistory, useRouter, type RouteRecordRaw } from "vue-router";
import { dispatchHome, dutyForPath, NAV, roleForPath } from "@/nav";
import { roleAtLeast, session } from "@/stores/session";

/** /dispatch: the first 派车 page the user's duties open, decided once /api/me has answered
 * (the shell mounts the view only then; a redirect would run before, at the page's start). */
const DispatchHome = defineComponent({
  setup() {
    const r = useRouter();
    onMounted(() => void r.replace(dispatchHome(session.me?.user.duties ?? [])));
    return () => null;
  },
});

// Hash history: the server serves index.html at "/" only, and a reload keeps the view.
// The records, reports and costs issues filled the 车辆档案, 驾驶员档案, 报表 and 运行费用 slots.
const FILLED: Record<string, () => Promise<unknown>> = {
  vehicles: () => import("@/views/Vehicles.vue"),
  drivers: () => import("@/views/Drivers.vue"),
  reports: () => import("@/views/Reports.vue"),
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
  // 派车 (#16): the request form, my requests, the approver's inbox, the dispatcher's board,
  // the order's page and its printable 派车单.
  { path: "/dispatch", name: "dispatch", component: DispatchHome },
  { path: "/dispatch/request", name: "orderRequest", component: () => import("@/views/OrderRequest.vue") },
  { path: "/dispatch/mine", name: "orderMine", component: () => import("@/views/OrderInbox.vue"), props: { mode: "mine" } },
  { path: "/dispatch/inbox", name: "orderInbox", component: () => import("@/views/OrderInbox.vue"), props: { mode: "inbox" } },
  { path: "/dispatch/board", name: "orderBoard", component: () => import("@/views/DispatchBoard.vue") },
  { path: "/dispatch/order/:org/:id", name: "orderDetail", component: () => import("@/views/OrderDetail.vue"), props: true },
  { path: "/dispatch/order/:org/:id/print", name: "orderPrint", component: () => import("@/views/OrderPrint.vue"), props: true },
  { path: "/drivers", name: "drivers", component: FILLED.drivers },
  { path: "/reports", name: "reports", component: FILLED.reports },
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
  const duty = dutyForPath(to.path);
  if (duty && session.me && !(session.me.user.duties ?? []).includes(duty)) return dispatchHome(session.me.user.duties ?? []);
  return true;
});
