import { describe, expect, it } from "vitest";
import { Lifetime } from "@/map/lifetime";

function deferred<T>(): { p: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const p = new Promise<T>((r) => (resolve = r));
  return { p, resolve };
}

describe("a view's map lifetime", () => {
  it("runs a continuation that resolves while the view is alive", async () => {
    const life = new Lifetime();
    const d = deferred<number>();
    const seen: number[] = [];
    const done = life.then(d.p, (v) => seen.push(v));
    d.resolve(7);
    await done;
    expect(seen).toEqual([7]);
    expect(life.alive).toBe(true);
  });

  it("drops a continuation that resolves after the view ended (the map was removed)", async () => {
    const life = new Lifetime();
    const d = deferred<number>();
    const seen: number[] = [];
    const done = life.then(d.p, (v) => seen.push(v));
    life.end();
    d.resolve(7);
    await done;
    expect(seen).toEqual([]);
    expect(life.alive).toBe(false);
  });

  it("leaves a rejection to the caller", async () => {
    const life = new Lifetime();
    await expect(life.then(Promise.reject(new Error("offline")), () => undefined)).rejects.toThrow("offline");
  });
});
