// Is the page still connected? The feed socket and the API each report here; the 连接中断
// banner shows when either has been down for `graceMs` (well within the 3 s of issue 14: a
// reconnect that succeeds at once does not flash the screen).
import { reactive } from "vue";

export const CONNECTION_GRACE_MS = 1_500;

interface ConnectionState {
  feedUp: boolean;
  /** Epoch ms since when the feed is down (null: up, or never connected yet). */
  feedDownSince: number | null;
  apiDownSince: number | null;
  /** Set by the ticker: the banner is showing. */
  lost: boolean;
  lostSince: number | null;
  feedOpened(): void;
  feedClosed(now: number): void;
  apiFailed(now: number): void;
  apiOk(): void;
  tick(now: number): void;
  reset(): void;
}

export function isLost(
  feedDownSince: number | null,
  apiDownSince: number | null,
  now: number,
  graceMs = CONNECTION_GRACE_MS,
): boolean {
  const since = [feedDownSince, apiDownSince].filter((x): x is number => x !== null);
  return since.some((s) => now - s >= graceMs);
}

export const connection: ConnectionState = reactive({
  feedUp: false,
  feedDownSince: null as number | null,
  apiDownSince: null as number | null,
  lost: false,
  lostSince: null as number | null,
  feedOpened() {
    connection.feedUp = true;
    connection.feedDownSince = null;
    connection.tick(Date.now());
  },
  feedClosed(now: number) {
    connection.feedUp = false;
    if (connection.feedDownSince === null) connection.feedDownSince = now;
  },
  apiFailed(now: number) {
    if (connection.apiDownSince === null) connection.apiDownSince = now;
  },
  apiOk() {
    if (connection.apiDownSince !== null) connection.apiDownSince = null;
  },
  tick(now: number) {
    const lost = isLost(connection.feedDownSince, connection.apiDownSince, now);
    if (lost && !connection.lost) {
      const since = [connection.feedDownSince, connection.apiDownSince].filter((x): x is number => x !== null);
      connection.lostSince = Math.min(...since);
    }
    if (!lost) connection.lostSince = null;
    connection.lost = lost;
  },
  reset() {
    connection.feedUp = false;
    connection.feedDownSince = null;
    connection.apiDownSince = null;
    connection.lost = false;
    connection.lostSince = null;
  },
});
