// The /ws/live socket: connect with the token, resume after a drop (last_seq on the same web
// node, last_gid — the global alarm id — on another: stream/feed.py, "Resume"), ping every
// second so a silent network cut is noticed (no frame for STALE_MS → treat as closed), close
// code 4401 → the session ended (never a reconnect loop, never a silent reload).
import type { FeedFrame } from "@/api/types";
import { connection } from "@/stores/connection";
import { session } from "@/stores/session";
import { applyFrame, live, type FrameEffect } from "./store";

export const PING_MS = 500;
export const STALE_MS = 2_000;
export const RETRY_MAX_MS = 4_000;

/** Reconnect delay after `attempt` failures: 0.25 s, 0.5 s, 1 s, 2 s, 4 s, 4 s… */
export function retryDelay(attempt: number): number {
  return Math.min(RETRY_MAX_MS, 250 * 2 ** Math.max(0, attempt));
}

/** Where the page stands in the feed: sent back on every reconnect. */
export interface Resume {
  lastSeq: number | null;
  lastGid: string | null;
  node: string | null;
}

/**
 * The socket's URL. Behind a load balancer the reconnect may reach another web node: `node`
 * says where the page came from, `last_gid` (the last global alarm id) is what that node
 * resumes by; `last_seq` only means something to the node that sent it.
 */
export function feedUrl(loc: { protocol: string; host: string }, token: string, at: Resume): string {
  const proto = loc.protocol === "https:" ? "wss:" : "ws:";
  let url = `${proto}//${loc.host}/ws/live?token=${encodeURIComponent(token)}`;
  if (at.lastSeq !== null) url += `&last_seq=${at.lastSeq}`;
  if (at.lastGid !== null) url += `&last_gid=${encodeURIComponent(at.lastGid)}`;
  if (at.node !== null) url += `&node=${encodeURIComponent(at.node)}`;
  return url;
}

export class Feed {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: number | null = null;
  private pinger: number | null = null;
  private stopped = false;
  /** Bytes received, for the page benchmark (websocket bytes/s). */
  bytes = 0;

  constructor(private readonly onEffect: (e: FrameEffect) => void) {}

  start(): void {
    this.stopped = false;
    this.open();
    this.pinger = window.setInterval(() => this.heartbeat(), PING_MS);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) window.clearTimeout(this.timer);
    if (this.pinger !== null) window.clearInterval(this.pinger);
    this.timer = this.pinger = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
  }

  /** Drop the socket as a network cut would (used when the feed goes stale). */
  private drop(): void {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    ws.onmessage = null;
    try {
      ws.close();
    } catch {
      /* already closing */
    }
    this.ws = null;
    // Down since the last frame, not since we noticed: the banner's 3 s count from the cut.
    this.closed(1006, "", live.lastFrameAt);
  }

  private open(): void {
    if (this.stopped || !session.token || session.ended) return;
    const ws = new WebSocket(feedUrl(location, session.token, live));
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      live.lastFrameAt = Date.now();
      connection.feedOpened();
    };
    ws.onmessage = (ev: MessageEvent<string>) => {
      this.bytes += ev.data.length;
      let f: FeedFrame;
      try {
        f = JSON.parse(ev.data) as FeedFrame;
      } catch {
        console.error("feed: a frame that is not JSON was ignored");
        return;
      }
      this.onEffect(applyFrame(f, Date.now()));
    };
    ws.onclose = (ev: CloseEvent) => {
      if (this.ws === ws) this.ws = null;
      this.closed(ev.code, ev.reason);
    };
  }

  private closed(code: number, reason: string, since: number = Date.now()): void {
    connection.feedClosed(since);
    if (code === 4401) {
      session.end(reason === "session_revoked" ? "session_revoked" : "session_expired");
      return;
    }
    if (this.stopped) return;
    const delay = retryDelay(this.attempt++);
    this.timer = window.setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }

  private heartbeat(): void {
    const ws = this.ws;
    const now = Date.now();
    connection.tick(now);
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (now - live.lastFrameAt > STALE_MS) {
      this.drop();
      return;
    }
    ws.send(JSON.stringify({ op: "ping" }));
  }
}
