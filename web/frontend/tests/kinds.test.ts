// The alarm kinds the front end names are the rules' own (rules/events.py KINDS, which
// GET /api/me lists and the desk, the history and the reports filter by), and the Chinese
// names are the ones the messages use (notify/message.py KIND_NAMES): read from the Python.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import en from "@/i18n/en";
import zh from "@/i18n/zh";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** The string items of the Python tuple/dict literal ``NAME ... = (`` … ``)`` / ``{`` … ``}``. */
function pythonBlock(file: string, name: string): string {
  const src = readFileSync(ROOT + file, "utf8");
  const start = src.search(new RegExp(`^${name}\\b[^=\\n]*=\\s*[({]`, "m"));
  if (start < 0) throw new Error(`${name} not found in ${file}`);
  const open = src.indexOf(src.slice(start).match(/[({]/)![0], start);
  const close = src.indexOf(src[open] === "(" ? "\n)" : "\n}", open);
  return src.slice(open + 1, close).replace(/#.*$/gm, "");
}

function pythonKinds(): string[] {
  return Array.from(pythonBlock("rules/events.py", "KINDS").matchAll(/"([a-z_]+)"/g), (m) => m[1]);
}

function pythonKindNames(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of pythonBlock("notify/message.py", "KIND_NAMES").matchAll(/"([a-z_]+)":\s*"([^"]+)"/g)) out[m[1]] = m[2];
  return out;
}

describe("alarm kinds", () => {
  const kinds = pythonKinds();

  it("reads the rules' list (and it has the dispatch and cost kinds)", () => {
    expect(kinds.length).toBeGreaterThanOrEqual(21);
    for (const k of ["speeding", "no_order", "order_mismatch", "driver_mismatch", "cost_refuel_away", "cost_rest_day"]) {
      expect(kinds).toContain(k);
    }
  });

  it("every kind the rules know is named in Chinese and in English, and no other", () => {
    expect(Object.keys(zh.kind).sort()).toEqual([...kinds].sort());
    expect(Object.keys(en.kind).sort()).toEqual([...kinds].sort());
  });

  it("the Chinese names are the messages' names", () => {
    const names = pythonKindNames();
    expect(Object.keys(names).sort()).toEqual([...kinds].sort());
    for (const k of kinds) expect(zh.kind[k as keyof typeof zh.kind], k).toBe(names[k]);
  });

  it("the English names are English", () => {
    for (const k of kinds) expect(en.kind[k as keyof typeof en.kind], k).toMatch(/^[\x20-\x7e]+$/);
  });
});
