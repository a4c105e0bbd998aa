import { describe, expect, it } from "vitest";
import {
  type Command,
  QUICK_PHRASES,
  STATES,
  canConfirm,
  confirmBody,
  forAlarm,
  isDisabledError,
  isFinal,
  locateBody,
  locateReply,
  pollUntilFinal,
  stateKey,
  stateTone,
  textBody,
  textProblem,
  trackBody,
} from "@/domain/commands";
import en from "@/i18n/en";
import zh from "@/i18n/zh";

function cmd(state: Command["state"], extra: Partial<Command> = {}): Command {
  return {
    id: "cmd-1",
    vehicle: "V1",
    kind: "text",
    state,
    created_by: "op",
    created_at: 0,
    expires_at: 1,
    alarm_id: "A1",
    ...extra,
  };
}

describe("states", () => {
  it("has the Chinese and English label of every state", () => {
    expect(zh.cmd.state).toEqual({
      awaiting_confirmation: "待复核",
      queued: "排队中（终端离线时等待）",
      sent: "已下发",
      acked: "终端已应答",
      failed: "失败",
      timeout: "超时无应答",
      expired: "已过期",
    });
    for (const s of STATES) {
      expect(stateKey(s)).toBe(`cmd.state.${s}`);
      expect(en.cmd.state[s]).toBeTruthy();
    }
    expect(stateKey("weird")).toBeNull();
  });
  it("only acked, failed, timeout and expired are final", () => {
    expect(STATES.filter(isFinal)).toEqual(["acked", "failed", "timeout", "expired"]);
    expect(stateTone("acked")).toBe("ok");
    expect(stateTone("timeout")).toBe("bad");
    expect(stateTone("queued")).toBe("wait");
  });
});

describe("bodies", () => {
  it("a quick phrase on a critical alarm goes with the emergency flag and the alarm", () => {
    expect(QUICK_PHRASES).toEqual(["请减速慢行", "请立即返回", "请联系监控室"]);
    expect(textBody(QUICK_PHRASES[0], true, "A1")).toEqual({
      kind: "text",
      text: "请减速慢行",
      emergency: true,
      tts: true,
      alarm_id: "A1",
    });
    expect(textBody("  请立即返回 ", false, "A2")).toMatchObject({ text: "请立即返回", emergency: false });
  });
  it("free text: empty and over 200 characters are refused (counted in characters)", () => {
    expect(textProblem("   ")).toBe("empty");
    expect(textProblem("慢".repeat(200))).toBeNull();
    expect(textProblem("慢".repeat(201))).toBe("tooLong");
  });
  it("confirm, locate and the 5 s / 10 min track", () => {
    expect(confirmBody("A1")).toEqual({ kind: "confirm_alarm", alarm_id: "A1" });
    expect(locateBody("A1")).toEqual({ kind: "locate", alarm_id: "A1" });
    expect(trackBody("A1")).toEqual({ kind: "track", interval_s: 5, duration_s: 600, alarm_id: "A1" });
    expect(canConfirm("terminal_alarm")).toBe(true);
    expect(canConfirm("speeding")).toBe(false);
  });
  it("the position of an acked locate, and nothing before", () => {
    const reply = { lat: 30.45, lon: 106.63, speed_kmh: 12 };
    expect(locateReply(cmd("acked", { kind: "locate", reply }))).toEqual(reply);
    expect(locateReply(cmd("sent", { kind: "locate", reply }))).toBeNull();
    expect(locateReply(cmd("acked", { kind: "text", reply }))).toBeNull();
  });
  it("lists the alarm's commands only; recognises the switched-off feature", () => {
    const list = [cmd("acked", { id: "a", alarm_id: "A1" }), cmd("sent", { id: "b", alarm_id: "A2" }), cmd("sent", { id: "c", alarm_id: null })];
    expect(forAlarm(list, "A1").map((c) => c.id)).toEqual(["a"]);
    expect(isDisabledError(403, "commands to terminals are disabled (commands.enabled)")).toBe(true);
    expect(isDisabledError(403, "forbidden")).toBe(false);
  });
});

describe("polling", () => {
  it("asks until the state is final, then stops", async () => {
    const answers: Command["state"][] = ["sent", "sent", "acked", "acked"];
    let asked = 0;
    const seen: string[] = [];
    const sleeps: number[] = [];
    const last = await pollUntilFinal(cmd("queued"), (c) => seen.push(c.state), {
      get: async () => cmd(answers[asked++]),
      sleep: async (ms) => {
        sleeps.push(ms);
      },
    });
    expect(last.state).toBe("acked");
    expect(asked).toBe(3);
    expect(seen).toEqual(["sent", "sent", "acked"]);
    expect(sleeps).toEqual([1000, 1000, 1000]);
  });
  it("does not ask at all for a final command, stops when the card goes, survives a failed poll", async () => {
    let asked = 0;
    await pollUntilFinal(cmd("failed"), () => {}, { get: async () => (asked++, cmd("failed")), sleep: async () => {} });
    expect(asked).toBe(0);

    let stopped = false;
    await pollUntilFinal(cmd("queued"), () => {}, {
      get: async () => {
        asked++;
        stopped = true;
        return cmd("sent");
      },
      sleep: async () => {},
      stopped: () => stopped,
    });
    expect(asked).toBe(1);

    const errors: unknown[] = [];
    let n = 0;
    const last = await pollUntilFinal(
      cmd("queued"),
      () => {},
      {
        get: async () => {
          if (n++ === 0) throw new Error("network");
          return cmd("timeout");
        },
        sleep: async () => {},
      },
      1000,
      10,
      (e) => errors.push(e),
    );
    expect(errors).toHaveLength(1);
    expect(last.state).toBe("timeout");
  });
  it("gives up after maxPolls", async () => {
    let asked = 0;
    const last = await pollUntilFinal(cmd("queued"), () => {}, { get: async () => (asked++, cmd("sent")), sleep: async () => {} }, 1, 5);
    expect(asked).toBe(5);
    expect(last.state).toBe("sent");
  });
});
