// @vitest-environment jsdom
import { act, cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RunwireClient } from "../src/client.js";
import { ConnectionStatus, RunwireProvider, useRun } from "../src/react.js";
import { event, FakeSocket } from "./fake-socket.js";

function RunView({ runId }: { runId: string }) {
  const { snapshot, connection, error } = useRun(runId);
  return (
    <div>
      <p data-testid="status">{snapshot?.status ?? "unknown"}</p>
      <p data-testid="progress">{String(snapshot?.progress?.percent ?? "-")}</p>
      <p data-testid="conn">{connection.status}</p>
      <p data-testid="error">{error?.code ?? "none"}</p>
    </div>
  );
}

const makeClient = (extra = {}) =>
  new RunwireClient({ url: "ws://test/v1/stream", WebSocket: FakeSocket, seed: 3n, pageEvents: false, ...extra });

beforeEach(() => {
  FakeSocket.all = [];
  vi.useFakeTimers({ shouldAdvanceTime: false });
});
afterEach(() => {
  cleanup();
  vi.useRealTimers();
});

describe("useRun", () => {
  it("subscribes on mount and renders the folded snapshot live", async () => {
    const client = makeClient();
    render(
      <RunwireProvider client={client}>
        <RunView runId="run-1" />
        <RunView runId="run-1" />
      </RunwireProvider>,
    );
    await act(() => vi.advanceTimersByTimeAsync(0));
    const ws = FakeSocket.last();
    await act(async () => {
      ws.open();
      ws.welcome();
    });
    expect(ws.sent[0]).toMatchObject({ type: "hello", subscriptions: [{ run_id: "run-1" }] });
    expect(screen.getAllByTestId("conn")[0]?.textContent).toBe("connected");
    await act(async () => {
      ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 2 });
      ws.recv({ type: "batch", events: [event(1, "run.status", { status: "running" }), event(2, "run.progress", { percent: 40 })] });
    });
    expect(screen.getAllByTestId("status").map((e) => e.textContent)).toEqual(["running", "running"]);
    expect(screen.getAllByTestId("progress")[0]?.textContent).toBe("40");
    await act(async () => {
      ws.recv({ type: "error", code: "forbidden", message: "no", retryable: false, run_id: "run-2" });
      ws.recv({ type: "error", code: "acme_notice", message: "hm", retryable: true, run_id: "run-1" });
    });
    expect(screen.getAllByTestId("error")[0]?.textContent).toBe("acme_notice");
    await act(() => client.close());
  });

  it("unsubscribes when the last component of a run unmounts", async () => {
    const client = makeClient();
    const view = render(
      <RunwireProvider client={client}>
        <RunView runId="run-1" />
      </RunwireProvider>,
    );
    await act(() => vi.advanceTimersByTimeAsync(0));
    const ws = FakeSocket.last();
    await act(async () => {
      ws.open();
      ws.welcome();
      ws.recv({ type: "subscribed", run_id: "run-1", epoch: "e1", after_seq: 0, head_seq: 0 });
    });
    view.rerender(<RunwireProvider client={client} />);
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(ws.sent.at(-1)).toEqual({ type: "unsubscribe", run_ids: ["run-1"] });
    expect(client.runIds).toEqual([]);
    await act(() => client.close());
  });
});

describe("ConnectionStatus", () => {
  it("shows connected, reconnecting with a countdown, and failed with a retry button", async () => {
    const client = makeClient({ reconnectBaseMs: 4000, reconnectFactor: 1, maxAttempts: 2 });
    render(
      <RunwireProvider client={client}>
        <ConnectionStatus />
      </RunwireProvider>,
    );
    await act(() => vi.advanceTimersByTimeAsync(0));
    await act(async () => {
      FakeSocket.last().open();
      FakeSocket.last().welcome();
    });
    expect(screen.getByRole("status").textContent).toBe("Connected");
    await act(async () => {
      FakeSocket.last().serverClose(1011);
      await vi.advanceTimersByTimeAsync(0);
    });
    const state = client.state;
    expect(state.status).toBe("reconnecting");
    const delay = state.status === "reconnecting" ? state.delayMs : 0;
    const secs = Math.ceil(delay / 1000);
    expect(screen.getByRole("status").textContent).toBe(`Reconnecting in ${secs} s`);
    if (secs >= 2) {
      await act(() => vi.advanceTimersByTimeAsync(1000));
      expect(screen.getByRole("status").textContent).toBe(`Reconnecting in ${secs - 1} s`);
    }
    await act(() => vi.advanceTimersByTimeAsync(delay + 1));
    await act(async () => {
      FakeSocket.last().open();
      FakeSocket.last().serverClose(4001);
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(screen.getByRole("status").getAttribute("data-status")).toBe("failed");
    expect(screen.getByRole("status").textContent).toContain("Connection failed");
    const before = FakeSocket.all.length;
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Retry now" }));
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(FakeSocket.all.length).toBe(before + 1);
    expect(screen.getByRole("status").textContent).toBe("Connecting…");
    await act(() => client.close());
  });
});
