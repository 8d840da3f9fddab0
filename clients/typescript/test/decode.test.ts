import { describe, expect, it } from "vitest";
import { decodeFrame, DecodeError, hasAmbiguousNumber } from "../src/decode.js";

const event = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: "event",
    event: {
      event_id: "e1",
      run_id: "run-1",
      seq: 1,
      type: "run.progress",
      time: "2026-11-22T10:00:00.000Z",
      data: { percent: 42.5 },
      ...over,
    },
  });

describe("decodeFrame (spec §1.3, §14.2)", () => {
  it("decodes a valid event and keeps fractions in data", () => {
    const m = decodeFrame(event({ data: { percent: 50.0, total: 1e3 } }));
    expect(m).toMatchObject({ type: "event", event: { seq: 1, data: { percent: 50, total: 1000 } } });
  });

  it.each([
    ["a fraction integer (RW-CONV-6)", '{"type":"subscribed","run_id":"run-1","epoch":"e1","after_seq":0,"head_seq":2.0}'],
    ["an exponent integer (RW-CONV-6)", '{"type":"subscribed","run_id":"run-1","epoch":"e1","after_seq":0,"head_seq":2e0}'],
    ["a negative integer (RW-CONV-2)", '{"type":"subscribed","run_id":"run-1","epoch":"e1","after_seq":0,"head_seq":-1}'],
    ["an unsafe integer (RW-CONV-2)", event({ seq: 9007199254740993 }).replace("9007199254740992", "9007199254740993")],
    ["two objects (RW-CONV-1)", '{"type":"ping","id":"a"}{"type":"ping","id":"b"}'],
    ["an array (RW-CONV-1)", '[{"type":"ping","id":"a"}]'],
    ["invalid JSON", '{"type":"ping",'],
    ["a bad event type (RW-EVENT-6)", event({ type: "Run.Status" })],
    ["a bad time (RW-EVENT-5)", event({ time: "2026-11-22T10:00:00+01:00" })],
    ["a bad run id (RW-EVENT-2)", event({ run_id: "run 1" })],
    ["data that is not an object (RW-EVENT-7)", event({ data: [1] })],
    ["a ping id too long (RW-HEART-2)", JSON.stringify({ type: "ping", id: "x".repeat(65) })],
    ["an error without retryable", '{"type":"error","code":"x","message":"m"}'],
  ])("rejects %s", (_, text) => {
    expect(() => decodeFrame(text)).toThrow(DecodeError);
  });

  it("ignores unknown message types whole (RW-VERSION-5)", () => {
    expect(decodeFrame('{"type":"future.thing","seq":1.0,"x":-5}')).toEqual({ type: "future.thing", seq: 1, x: -5 });
  });

  it("treats null optional members as absent (RW-CONV-7)", () => {
    expect(() => decodeFrame('{"type":"error","code":"x","message":"m","retryable":true,"run_id":null,"close_code":null}')).not.toThrow();
  });

  it("finds ambiguous numbers only outside strings", () => {
    expect(hasAmbiguousNumber('{"a":"2.0","b":"\\"3.0"}')).toBe(false);
    expect(hasAmbiguousNumber('{"a":"x\\\\","b":3.0}')).toBe(true);
    expect(hasAmbiguousNumber('{"a":2.5,"b":17}')).toBe(false);
  });
});
