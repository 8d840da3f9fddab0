/**
 * The reconnect policy of spec §12: exponential backoff with full jitter
 * (`RW-RECONNECT-1`), reconnect-now delays (`RW-RECONNECT-6`), `retry_after_ms`
 * (`RW-RECONNECT-2`) and the close-code classes of §13.2 (`RW-CLOSE-2`).
 */

/** A source of uniformly distributed integers. */
export interface Random {
  /** An integer drawn uniformly from `0 ..= max`. */
  int(max: number): number;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * SplitMix64: a small, well-known generator, seeded with any integer from 0 to 2^64 − 1
 * (kept as a `bigint`, so a seed above 2^53 − 1 replays exactly).
 */
export class SeededRandom implements Random {
  private state: bigint;

  constructor(seed: bigint) {
    if (seed < 0n || seed > MASK64) throw new RangeError("the seed must be an integer from 0 to 2^64 - 1");
    this.state = seed;
  }

  /** The next 64 random bits. */
  next64(): bigint {
    this.state = (this.state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = this.state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  }

  int(max: number): number {
    if (!Number.isSafeInteger(max) || max < 0) throw new RangeError(`bad bound ${max}`);
    const span = BigInt(max) + 1n;
    // Rejection sampling: no modulo bias, whatever the bound.
    const limit = (MASK64 + 1n) - ((MASK64 + 1n) % span);
    for (;;) {
      const x = this.next64();
      if (x < limit) return Number(x % span);
    }
  }
}

/** A seed drawn from the platform's random source. */
export function randomSeed(): bigint {
  const words = new Uint32Array(2);
  globalThis.crypto.getRandomValues(words);
  return (BigInt(words[0]!) << 32n) | BigInt(words[1]!);
}

/** What a close means to the client (spec §13.2). */
export type CloseClass = "terminal" | "backoff" | "now";

/**
 * The class of a close code (`RW-CLOSE-2`). `undefined` is a connection lost without a
 * close frame (`RW-RECONNECT-7`), as are the local-only codes 1005 and 1006.
 */
export function closeClass(code: number | undefined): CloseClass {
  if (code === undefined) return "backoff";
  if ((code >= 4000 && code <= 4099) || [1002, 1003, 1007, 1008, 1009, 1010].includes(code)) return "terminal";
  if ((code >= 4200 && code <= 4299) || code === 1001 || code === 1012) return "now";
  return "backoff";
}

/** The reconnect settings (spec §12, Appendix B). */
export interface BackoffOptions {
  /** `base` in ms; default 500. */
  baseMs?: number;
  /** `factor`; default 2. */
  factor?: number;
  /** `cap` in ms; default 20,000. */
  capMs?: number;
}

/** The backoff envelope and delays of spec §12. */
export class Backoff {
  readonly baseMs: number;
  readonly factor: number;
  readonly capMs: number;

  constructor(
    opts: BackoffOptions,
    private readonly random: Random,
  ) {
    this.baseMs = opts.baseMs ?? 500;
    this.factor = opts.factor ?? 2;
    this.capMs = opts.capMs ?? 20_000;
  }

  /** `ceiling(n) = min(cap, base × factor^n)`, computed without overflow. */
  ceiling(n: number): number {
    let c = this.baseMs;
    for (let i = 0; i < n; i++) {
      c *= this.factor;
      if (c >= this.capMs) return this.capMs;
    }
    return Math.min(c, this.capMs);
  }

  /**
   * The delay in whole milliseconds before attempt `n` after a close of class `cls`:
   * `uniform(0, ceiling(n))` for a backoff close, raised to `retryAfterMs` when that is
   * larger (`RW-RECONNECT-2`); `retryAfterMs` or `uniform(0, base)` for a reconnect-now
   * close (`RW-RECONNECT-6`).
   */
  delay(n: number, cls: "backoff" | "now", retryAfterMs?: number): number {
    if (cls === "now") {
      return retryAfterMs ?? this.random.int(Math.min(this.baseMs, this.capMs));
    }
    const draw = this.random.int(Math.floor(this.ceiling(n)));
    return Math.max(draw, retryAfterMs ?? 0);
  }
}
