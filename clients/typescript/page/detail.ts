/**
 * What a run page shows besides the folded snapshot: the agent's text (spec §3.7) and the
 * tool calls that finished (§3.6), both event-level detail that `RunSnapshot` does not
 * carry (§8.3). Collected from the client's `event` and `reset` notifications.
 */

import { useEffect, useReducer } from "react";
import type { JsonObject, ResetMessage, RunEvent } from "../src/index.js";
import { useRunwireClient } from "../src/react.js";

/** One assembled agent message or thinking block. */
export interface AgentText {
  readonly id: string;
  readonly kind: "message" | "thinking";
  readonly text: string;
  readonly done: boolean;
}

/** A finished tool call. */
export interface FinishedCall {
  readonly call_id: string;
  readonly tool: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly duration_ms?: number;
  readonly seq: number;
}

/** The event-level detail of one run. */
export interface RunDetail {
  readonly messages: readonly AgentText[];
  readonly finished: readonly FinishedCall[];
  /** The `as_of_seq` of the last reset: agent text before it is not shown (`RW-TYPE-13`). */
  readonly resetAt: number | undefined;
}

/** How many finished tool calls and agent messages the page keeps. */
export const DETAIL_MAX = 50;

const EMPTY: RunDetail = { messages: [], finished: [], resetAt: undefined };

type Action = { kind: "event"; event: RunEvent } | { kind: "reset"; msg: ResetMessage } | { kind: "clear" };

function str(d: JsonObject, k: string): string | undefined {
  const v = d[k];
  return typeof v === "string" ? v : undefined;
}

function onEvent(s: RunDetail, e: RunEvent): RunDetail {
  const d = e.data;
  if (e.type === "agent.message" || e.type === "agent.thinking") {
    const id = str(d, "message_id");
    const delta = str(d, "delta");
    if (id === undefined || delta === undefined) return s;
    const kind = e.type === "agent.message" ? "message" : "thinking";
    const done = d.done === true;
    const at = s.messages.findIndex((m) => m.id === id && m.kind === kind);
    // RW-TYPE-13: the deltas of one message_id, concatenated in seq order (the client
    // delivers each run's events once and in order).
    const messages =
      at >= 0
        ? s.messages.map((m, i) => (i === at ? { ...m, text: m.text + delta, done: m.done || done } : m))
        : [...s.messages, { id, kind, text: delta, done } as const].slice(-DETAIL_MAX);
    return { ...s, messages };
  }
  if (e.type === "tool.finished") {
    const call_id = str(d, "call_id");
    if (call_id === undefined) return s;
    const error = str(d, "error");
    const call: FinishedCall = {
      call_id,
      tool: str(d, "tool") ?? "",
      ok: d.ok === true,
      seq: e.seq,
      ...(error !== undefined ? { error } : {}),
      ...(typeof d.duration_ms === "number" ? { duration_ms: d.duration_ms } : {}),
    };
    return { ...s, finished: [...s.finished, call].slice(-DETAIL_MAX) };
  }
  return s;
}

function reduce(s: RunDetail, a: Action): RunDetail {
  switch (a.kind) {
    case "event":
      return onEvent(s, a.event);
    case "reset":
      // The snapshot replaces the state; the text before it is gone (RW-RESUME-9).
      return { messages: [], finished: [], resetAt: a.msg.snapshot.as_of_seq };
    case "clear":
      return EMPTY;
  }
}

/**
 * The agent text and finished tool calls of `runId`, from the events the client delivers
 * while the calling component is mounted. Call it before `useRun(runId)`, so that it
 * listens before the run is subscribed.
 */
export function useRunDetail(runId: string): RunDetail {
  const client = useRunwireClient();
  const [state, dispatch] = useReducer(reduce, EMPTY);
  useEffect(() => {
    dispatch({ kind: "clear" });
    const offEvent = client.on("event", (event) => {
      if (event.run_id === runId) dispatch({ kind: "event", event });
    });
    const offReset = client.on("reset", (msg) => {
      if (msg.run_id === runId) dispatch({ kind: "reset", msg });
    });
    return () => {
      offEvent();
      offReset();
    };
  }, [client, runId]);
  return state;
}
