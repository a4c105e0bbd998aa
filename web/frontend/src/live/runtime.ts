// What runs while someone is logged in, whichever view is open: the feed, the alarm reminder
// (repeats until acknowledged), the tab title (counts unacknowledged alarms), desktop
// notifications, and the sound of the session and connection banners.
import { watch } from "vue";
import { api } from "@/api/client";
import type { Alarm, Me } from "@/api/types";
import { play } from "@/audio/tones";
import { severityOf, unacknowledged } from "@/domain/alarms";
import { newReminderState, reminderTick, type ReminderState } from "@/domain/reminder";
import { t } from "@/i18n";
import { connection } from "@/stores/connection";
import { session } from "@/stores/session";
import { Feed } from "./feed";
import { alarmsVersion, live, resetLive } from "./store";

export const TICK_MS = 250;
/** How often the page asks whether its session still holds (revocation, expiry). */
export const SESSION_CHECK_MS = 10_000;
/** The banners sound again this often while they show. */
export const BANNER_REPEAT_MS = 15_000;

let feed: Feed | null = null;
let ticker: number | null = null;
let reminder: ReminderState = newReminderState();
const stops: (() => void)[] = [];

export function feedBytes(): number {
  return feed?.bytes ?? 0;
}

/** The tab title: "(3) 未确认报警 · 公务用车监控" while something waits, else the title. */
export function tabTitle(unacked: number): string {
  return unacked > 0 ? `${t("desk.titleCount", { n: unacked })} · ${t("app.title")}` : t("app.title");
}

/** Desktop notifications shown, newest last (window.fw.notified; bounded). */
export const notified: { id: string; title: string; at: number }[] = [];

function notify(a: Alarm): void {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  const sev = severityOf(a);
  const title = t("desk.notifyTitle", { sev: t(`severity.${sev}`), plate: a.plate, kind: t(`kind.${a.kind}`) });
  try {
    const n = new Notification(title, { body: a.place ?? "", tag: a.id, requireInteraction: sev === "critical" });
    n.onclick = () => window.focus();
    notified.push({ id: a.id, title, at: Date.now() });
    if (notified.length > 100) notified.shift();
  } catch (e) {
    console.warn("desktop notification failed", e);
  }
}

function onNewAlarms(list: Alarm[]): void {
  const fresh = unacknowledged(list);
  if (!fresh.length) return;
  // A new alarm sounds at once, whatever the interval of its severity.
  for (const a of fresh) delete reminder.lastAt[severityOf(a)];
  for (const a of fresh) notify(a);
  remind(Date.now());
}

function remind(now: number): void {
  const r = reminderTick(live.alarms.values(), reminder, now);
  reminder = r.state;
  if (r.tone) play(r.tone);
}

let bannerSoundAt = 0;
let sessionTimer: number | null = null;

/**
 * Ask the server whether the session holds: every SESSION_CHECK_MS, and just after the moment
 * it is due to end. A 401 raises the banner (api/client.ts); anything else is kept quiet here,
 * since the connection banner already covers an unreachable server.
 */
async function checkSession(): Promise<void> {
  if (!session.token || session.ended) return;
  try {
    const me = await api<Me>("GET", "/api/me");
    if (session.me) session.me.session = me.session;
  } catch {
    /* reported by the client: session banner or connection banner */
  }
  scheduleSessionCheck();
}

function scheduleSessionCheck(): void {
  if (sessionTimer !== null) window.clearTimeout(sessionTimer);
  const ends = session.me?.session?.expires_at;
  const untilEnd = ends ? ends - Date.now() + 1_000 : Infinity;
  sessionTimer = window.setTimeout(() => void checkSession(), Math.max(1_000, Math.min(SESSION_CHECK_MS, untilEnd)));
}

function tick(): void {
  const now = Date.now();
  connection.tick(now);
  if (session.ended) {
    if (now - bannerSoundAt >= BANNER_REPEAT_MS) {
      bannerSoundAt = now;
      play("session");
    }
    return;
  }
  if (connection.lost) {
    if (now - bannerSoundAt >= BANNER_REPEAT_MS) {
      bannerSoundAt = now;
      play("connection");
    }
  } else {
    bannerSoundAt = 0;
  }
  remind(now);
}

export function startRuntime(): void {
  stopRuntime();
  reminder = newReminderState();
  feed = new Feed((e) => onNewAlarms(e.newAlarms));
  feed.start();
  ticker = window.setInterval(tick, TICK_MS);
  scheduleSessionCheck();
  stops.push(
    watch(
      alarmsVersion,
      () => {
        document.title = tabTitle(unacknowledged(live.alarms.values()).length);
      },
      { immediate: true },
    ),
    watch(
      () => session.ended,
      (ended) => {
        if (ended) {
          bannerSoundAt = Date.now();
          play("session");
          feed?.stop();
        }
      },
    ),
    watch(
      () => connection.lost,
      (lost) => {
        if (lost && !session.ended) {
          bannerSoundAt = Date.now();
          play("connection");
        }
      },
    ),
  );
}

export function stopRuntime(): void {
  feed?.stop();
  feed = null;
  if (ticker !== null) window.clearInterval(ticker);
  ticker = null;
  if (sessionTimer !== null) window.clearTimeout(sessionTimer);
  sessionTimer = null;
  while (stops.length) stops.pop()?.();
  connection.reset();
  resetLive();
  document.title = t("app.title");
}
