import { describe, expect, it } from "vitest";
import { Backoff, closeClass, SeededRandom } from "../src/backoff.js";

const SEED = 0x5eedn;

describe("backoff (spec §12)", () => {
  it("ceiling(n) = min(cap, base × factor^n)", () => {
    const b = new Backoff({}, new SeededRandom(SEED));
    expect([0, 1, 2, 3, 4, 5, 6, 40, 2000].map((n) => b.ceiling(n))).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000,
    ]);
  });

  it("draws every delay within the full-jitter envelope and spreads over it (RW-RECONNECT-1)", () => {
    console.log(`seed ${SEED}`);
    const b = new Backoff({ baseMs: 100, factor: 3, capMs: 2000 }, new SeededRandom(SEED));
    for (let n = 0; n < 6; n++) {
      const ceiling = b.ceiling(n);
      const draws = Array.from({ length: 400 }, () => b.delay(n, "backoff"));
      for (const d of draws) {
        expect(Number.isInteger(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(ceiling);
      }
      // Full jitter: both halves of the envelope are used.
      expect(draws.some((d) => d < ceiling / 4)).toBe(true);
      expect(draws.some((d) => d > (ceiling * 3) / 4)).toBe(true);
    }
  });

  it("waits at least retry_after_ms on a backoff close, exactly it on a reconnect-now close", () => {
    const b = new Backoff({ baseMs: 100 }, new SeededRandom(SEED));
    for (let i = 0; i < 50; i++) expect(b.delay(0, "backoff", 250)).toBeGreaterThanOrEqual(250);
    expect(b.delay(7, "now", 1234)).toBe(1234);
    for (let i = 0; i < 50; i++) expect(b.delay(7, "now")).toBeLessThanOrEqual(100);
  });

  it("replays the same delays for the same seed, also above 2^53", () => {
    const seed = 18446744073709551615n;
    const a = new Backoff({}, new SeededRandom(seed));
    const b = new Backoff({}, new SeededRandom(seed));
    const c = new Backoff({}, new SeededRandom(seed - 1n));
    const da = Array.from({ length: 20 }, (_, i) => a.delay(i % 6, "backoff"));
    const db = Array.from({ length: 20 }, (_, i) => b.delay(i % 6, "backoff"));
    const dc = Array.from({ length: 20 }, (_, i) => c.delay(i % 6, "backoff"));
    expect(da).toEqual(db);
    expect(da).not.toEqual(dc);
  });

  it("classes close codes as §13.2 says (RW-CLOSE-2)", () => {
    for (const c of [4000, 4002, 4050, 4099, 1002, 1003, 1007, 1008, 1009, 1010]) expect(closeClass(c)).toBe("terminal");
    for (const c of [4200, 4250, 4299, 1001, 1012]) expect(closeClass(c)).toBe("now");
    for (const c of [undefined, 1000, 1011, 1013, 1014, 3000, 3999, 4100, 4150, 4300, 4999]) expect(closeClass(c)).toBe("backoff");
  });
});
