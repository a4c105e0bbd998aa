// What runs while someone is logged in, whichever view is open: the feed, the alarm reminder
// (repeats until acknowledged), the tab title (counts unacknowledged alarms), desktop
// notifications, and the sound of the session and connection banners.
import { watch } from "vue";
import type { Alarm } from "@/api/types";
import { play, sound } from "@/audio/tones";
import { severityOf, unacknowledged } from "@/domain/alarms";
import { newReminderState, reminderTick, type ReminderState } from "@/domain/reminder";
import { t } from "@/i18n";
import { connection } from "@/stores/connection";
import { session } from "@/stores/session";
import { Feed } from "./feed";
import { alarmsVersion, live, resetLive } from "./store";

export const TICK_MS = 250;
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

function notify(a: Alarm): void {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  const sev = severityOf(a);
  try {
    const n = new Notification(
      t("desk.notifyTitle", { sev: t(`severity.${sev}`), plate: a.plate, kind: t(`kind.${a.kind}`) }),
      { body: a.place ?? "", tag: a.id, requireInteraction: sev === "critical" },
    );
    n.onclick = () => window.focus();
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
  void sound;
}

export function stopRuntime(): void {
  feed?.stop();
  feed = null;
  if (ticker !== null) window.clearInterval(ticker);
  ticker = null;
  while (stops.length) stops.pop()?.();
  connection.reset();
  resetLive();
  document.title = t("app.title");
}
