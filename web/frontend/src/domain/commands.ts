// Commands to a vehicle's terminal from the alarm card (JT/T 808-2019 downlink through the
// gateway; web/commands_api.py). Pure: the request bodies, the states and which are final,
// and the polling loop with its clock and fetch passed in.

export type CommandKind = "text" | "confirm_alarm" | "locate" | "track";
export type CommandState =
  | "awaiting_confirmation"
  | "queued"
  | "sent"
  | "acked"
  | "failed"
  | "timeout"
  | "expired";

export interface LocateReply {
  lat: number;
  lon: number;
  speed_kmh?: number;
  heading?: number;
  time_ms?: number;
  alarm?: number;
  status?: number;
}

export interface Command {
  id: string;
  vehicle: string;
  kind: string;
  state: CommandState;
  created_by: string;
  created_at: number;
  expires_at: number;
  updated_at?: number;
  alarm_id: string | null;
  attempts?: number;
  result?: unknown;
  reply?: LocateReply | Record<string, unknown> | null;
  reason?: string | null;
  history?: { state: CommandState; at: number; by?: string; reason?: string }[];
}

/** The quick phrases of issue 20, in the order the card shows them. */
export const QUICK_PHRASES = ["请减速慢行", "请立即返回", "请联系监控室"] as const;
/** commands.text_max_chars' default; the server checks the configured one (400 beyond). */
export const TEXT_MAX_CHARS = 200;
/** 临时跟踪: every 5 s for 10 min (issue 20). */
export const TRACK_INTERVAL_S = 5;
export const TRACK_DURATION_S = 600;
/** How often the card asks for a command's state until it is final. */
export const POLL_MS = 1000;

export const STATES: readonly CommandState[] = [
  "awaiting_confirmation",
  "queued",
  "sent",
  "acked",
  "failed",
  "timeout",
  "expired",
];
const FINAL = new Set<CommandState>(["acked", "failed", "timeout", "expired"]);

/** A state after which nothing changes any more (stop polling). */
export function isFinal(state: string): boolean {
  return FINAL.has(state as CommandState);
}

/** The i18n key of a state's label (cmd.state.*); unknown states keep their raw name. */
export function stateKey(state: string): string | null {
  return STATES.includes(state as CommandState) ? `cmd.state.${state}` : null;
}

/** The visual tone of a state on the card. */
export function stateTone(state: string): "ok" | "bad" | "wait" {
  if (state === "acked") return "ok";
  if (isFinal(state)) return "bad";
  return "wait";
}

/** Why a text cannot be sent, or null: empty, or longer than the limit (in characters). */
export function textProblem(text: string, max = TEXT_MAX_CHARS): "empty" | "tooLong" | null {
  const t = text.trim();
  if (!t) return "empty";
  if ([...t].length > max) return "tooLong";
  return null;
}

/** The body for 0x8300 text: critical alarms get the emergency flag; always TTS so a driver
 * hears it without looking at the screen. */
export function textBody(text: string, critical: boolean, alarmId?: string): Record<string, unknown> {
  return { kind: "text", text: text.trim(), emergency: critical, tts: true, ...(alarmId ? { alarm_id: alarmId } : {}) };
}

export function confirmBody(alarmId: string): Record<string, unknown> {
  return { kind: "confirm_alarm", alarm_id: alarmId };
}

export function locateBody(alarmId?: string): Record<string, unknown> {
  return { kind: "locate", ...(alarmId ? { alarm_id: alarmId } : {}) };
}

export function trackBody(alarmId?: string): Record<string, unknown> {
  return {
    kind: "track",
    interval_s: TRACK_INTERVAL_S,
    duration_s: TRACK_DURATION_S,
    ...(alarmId ? { alarm_id: alarmId } : {}),
  };
}

/** Terminal alarms are the only ones 0x8203 can confirm (JT/T 808-2019 8.41). */
export function canConfirm(kind: string): boolean {
  return kind === "terminal_alarm";
}

/** The position a 立即定位 answered with, when it did. */
export function locateReply(cmd: Command): LocateReply | null {
  if (cmd.kind !== "locate" || cmd.state !== "acked" || !cmd.reply) return null;
  const r = cmd.reply as Partial<LocateReply>;
  return typeof r.lat === "number" && typeof r.lon === "number" ? (r as LocateReply) : null;
}

/** The commands that belong to one alarm, newest first (the listing already is). */
export function forAlarm(commands: Command[], alarmId: string): Command[] {
  return commands.filter((c) => c.alarm_id === alarmId);
}

/** Whether an API error means the feature is switched off ([commands] enabled = false). */
export function isDisabledError(status: number, code: string): boolean {
  return status === 403 && /disabled/.test(code);
}

export interface PollDeps {
  get: (id: string) => Promise<Command>;
  sleep: (ms: number) => Promise<void>;
  /** Stop early (the card went away). */
  stopped?: () => boolean;
}

/** Ask for a command's state every `intervalMs` until it is final (or `maxPolls` asked, or
 * stopped); each answer goes to `onUpdate`. Errors of one poll are passed on and the loop
 * goes on (a network blip must not freeze the card's state). Returns the last command seen. */
export async function pollUntilFinal(
  first: Command,
  onUpdate: (c: Command) => void,
  deps: PollDeps,
  intervalMs = POLL_MS,
  maxPolls = 900,
  onError?: (e: unknown) => void,
): Promise<Command> {
  let cur = first;
  for (let i = 0; i < maxPolls && !isFinal(cur.state); i++) {
    await deps.sleep(intervalMs);
    if (deps.stopped?.()) break;
    try {
      cur = await deps.get(cur.id);
      onUpdate(cur);
    } catch (e) {
      onError?.(e);
    }
  }
  return cur;
}
