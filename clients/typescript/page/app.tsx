/**
 * The live run page that `runwire serve` serves at `/`: a list of the runs this browser
 * opened, a form to open one by id, and one run followed live through `useRun` (its folded
 * state, spec §8.3), `useRunDetail` (agent text and finished tool calls) and
 * `ConnectionStatus`.
 */

import { useEffect, useState, type FormEvent, type ReactNode } from "react";
import { TERMINAL_STATUSES, type Json, type JsonObject, type RunSnapshot } from "../src/index.js";
import { ConnectionStatus, useRun, useRunwireClient } from "../src/react.js";
import { useRunDetail, type RunDetail } from "./detail.js";
import { loadRecent, remember, type RecentRun } from "./recent.js";

/** The run named by `?run=`, following the browser's history. */
function useRunParam(): [string | undefined, (id: string) => void] {
  const read = (): string | undefined => new URLSearchParams(location.search).get("run")?.trim() || undefined;
  const [runId, setRunId] = useState(read);
  useEffect(() => {
    const onPop = (): void => setRunId(read());
    addEventListener("popstate", onPop);
    return () => removeEventListener("popstate", onPop);
  }, []);
  const open = (id: string): void => {
    const url = new URL(location.href);
    url.searchParams.set("run", id);
    history.pushState(null, "", url);
    setRunId(id);
  };
  return [runId, open];
}

/** The whole page. */
export function App(): ReactNode {
  const [runId, open] = useRunParam();
  const [recent, setRecent] = useState<RecentRun[]>(loadRecent);
  return (
    <div className="layout">
      <header className="top">
        <span className="brand">Runwire</span>
        <ConnectionStatus className="connection" />
      </header>
      <aside className="side">
        <OpenRunForm key={runId ?? ""} onOpen={open} current={runId} />
        <RecentRuns runs={recent} current={runId} onOpen={open} />
        <TokenForm />
      </aside>
      <main className="main">
        {runId === undefined ? (
          <p className="hint">Enter a run id to follow it live.</p>
        ) : (
          <RunPage key={runId} runId={runId} onSeen={setRecent} />
        )}
      </main>
    </div>
  );
}

function OpenRunForm({ onOpen, current }: { onOpen: (id: string) => void; current: string | undefined }): ReactNode {
  const [text, setText] = useState(current ?? "");
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    const id = text.trim();
    if (id !== "") onOpen(id);
  };
  return (
    <form className="open" onSubmit={submit}>
      <label htmlFor="run-id">Run id</label>
      <div className="open-row">
        <input id="run-id" name="run" value={text} onChange={(e) => setText(e.target.value)} placeholder="run-42" autoComplete="off" spellCheck={false} />
        <button type="submit">Open</button>
      </div>
    </form>
  );
}

/** Where `main.tsx` reads the token from before every connection attempt. */
const TOKEN_KEY = "runwire.page.token";

/** The bearer token of a server with authentication (spec §7), kept for this tab only. */
function TokenForm(): ReactNode {
  const client = useRunwireClient();
  const [token, setToken] = useState(() => sessionStorage.getItem(TOKEN_KEY) ?? "");
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    if (token.trim() === "") sessionStorage.removeItem(TOKEN_KEY);
    else sessionStorage.setItem(TOKEN_KEY, token.trim());
    client.retry(); // asked again by the next attempt (RW-AUTH-9)
  };
  return (
    <form className="token" onSubmit={submit}>
      <label htmlFor="token" className="muted">Token, when the server asks for one</label>
      <div className="open-row">
        <input id="token" type="password" value={token} onChange={(e) => setToken(e.target.value)} autoComplete="off" />
        <button type="submit">Use</button>
      </div>
    </form>
  );
}

function RecentRuns({ runs, current, onOpen }: { runs: RecentRun[]; current: string | undefined; onOpen: (id: string) => void }): ReactNode {
  return (
    <nav className="recent" aria-labelledby="recent-title">
      <h2 id="recent-title">Recent runs</h2>
      {runs.length === 0 ? (
        <p className="muted">Runs you open here are listed here.</p>
      ) : (
        <ul data-testid="recent-runs">
          {runs.map((r) => (
            <li key={r.run_id} className={r.run_id === current ? "current" : undefined}>
              <a
                href={`?run=${encodeURIComponent(r.run_id)}`}
                onClick={(e) => {
                  e.preventDefault();
                  onOpen(r.run_id);
                }}
              >
                <span className="recent-title">{r.title ?? r.run_id}</span>
                <span className={`badge status-${r.status ?? "unknown"}`}>{r.status ?? "—"}</span>
              </a>
            </li>
          ))}
        </ul>
      )}
    </nav>
  );
}

function text(v: Json | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function num(v: Json | undefined): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/** One run, live. */
function RunPage({ runId, onSeen }: { runId: string; onSeen: (list: RecentRun[]) => void }): ReactNode {
  const detail = useRunDetail(runId); // listens before useRun subscribes
  const { snapshot, error } = useRun(runId);
  const title = text(snapshot?.metadata?.title);
  const status = snapshot?.status;
  useEffect(() => {
    onSeen(remember({ run_id: runId, seen_at: new Date().toISOString(), ...(title ? { title } : {}), ...(status ? { status } : {}) }));
  }, [runId, title, status, onSeen]);
  useEffect(() => {
    document.title = `${title ?? runId}${status ? ` · ${status}` : ""} · Runwire`;
  }, [runId, title, status]);

  return (
    <article className="run" data-run-id={runId}>
      <RunHeader runId={runId} snapshot={snapshot} />
      {error && (
        <p className="error" role="alert">
          {error.message}
        </p>
      )}
      {(snapshot === undefined || snapshot.as_of_seq === 0) && <p className="muted" data-testid="waiting">Waiting for the run's first event…</p>}
      <Progress snapshot={snapshot} />
      <div className="grid">
        <Todos snapshot={snapshot} />
        <ToolCalls snapshot={snapshot} detail={detail} />
      </div>
      <AgentTextPanel detail={detail} />
      <LogTail snapshot={snapshot} />
    </article>
  );
}

function RunHeader({ runId, snapshot }: { runId: string; snapshot: RunSnapshot | undefined }): ReactNode {
  const meta = snapshot?.metadata ?? {};
  const facts = (["project", "agent", "model"] as const).flatMap((k) => {
    const v = text(meta[k]);
    return v === undefined ? [] : [[k, v] as const];
  });
  const labels = meta.labels;
  const status = snapshot?.status;
  return (
    <header className="run-head">
      <div className="run-title">
        <h1>{text(meta.title) ?? runId}</h1>
        <span className={`badge big status-${status ?? "unknown"}`} data-testid="status">
          {status ?? "no status"}
        </span>
      </div>
      <p className="muted mono">
        {runId}
        {snapshot !== undefined && snapshot.as_of_seq > 0 && <> · seq {snapshot.as_of_seq}</>}
        {snapshot?.updated_at !== undefined && <> · updated {snapshot.updated_at}</>}
      </p>
      {snapshot?.status_reason !== undefined && (
        <p className={status !== undefined && TERMINAL_STATUSES.has(status) && status !== "completed" ? "reason bad" : "reason"} data-testid="status-reason">
          {snapshot.status_reason}
        </p>
      )}
      {(facts.length > 0 || (labels && typeof labels === "object" && !Array.isArray(labels))) && (
        <dl className="facts">
          {facts.map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{v}</dd>
            </div>
          ))}
          {labels !== null &&
            typeof labels === "object" &&
            !Array.isArray(labels) &&
            Object.entries(labels as JsonObject).map(([k, v]) => (
              <div key={`label-${k}`}>
                <dt>{k}</dt>
                <dd>{String(v)}</dd>
              </div>
            ))}
        </dl>
      )}
    </header>
  );
}

function Progress({ snapshot }: { snapshot: RunSnapshot | undefined }): ReactNode {
  const p = snapshot?.progress ?? {};
  const current = num(p.current);
  const total = num(p.total);
  const percent = num(p.percent) ?? (current !== undefined && total !== undefined && total > 0 ? (100 * current) / total : undefined);
  const parts = [
    percent !== undefined ? `${Math.round(percent * 10) / 10}%` : undefined,
    text(p.step),
    current !== undefined ? (total !== undefined ? `${current}/${total}` : String(current)) : undefined,
    text(p.tool),
  ].filter((x): x is string => x !== undefined);
  return (
    <section className="progress" aria-label="Progress">
      <div className="phase">
        <span className="label">Phase</span>
        <span className="phase-name" data-testid="phase">
          {snapshot?.phase ?? "—"}
        </span>
      </div>
      {/* Without a value the bar is indeterminate: nothing is known of the progress yet. */}
      <progress max={100} value={percent === undefined ? undefined : Math.min(100, Math.max(0, percent))} data-testid="progress" />
      <p className="progress-text" data-testid="progress-text">
        {parts.length > 0 ? parts.join(" · ") : "no progress reported"}
      </p>
      {text(p.message) !== undefined && <p className="muted">{text(p.message)}</p>}
    </section>
  );
}

function Todos({ snapshot }: { snapshot: RunSnapshot | undefined }): ReactNode {
  const items = (snapshot?.todos ?? []).filter((t): t is JsonObject => t !== null && typeof t === "object" && !Array.isArray(t));
  return (
    <section className="panel" aria-labelledby="todos-title">
      <h2 id="todos-title">Todos</h2>
      {items.length === 0 ? (
        <p className="muted">No todos.</p>
      ) : (
        <ul className="todos" data-testid="todos">
          {items.map((t, i) => {
            const status = text(t.status) ?? "pending";
            return (
              <li key={text(t.id) ?? i} className={`todo todo-${status}`} data-status={status}>
                <span className="todo-mark" aria-hidden="true" />
                <span className="todo-text">{text(t.text) ?? ""}</span>
                <span className="todo-status">{status.replace("_", " ")}</span>
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}

function ToolCalls({ snapshot, detail }: { snapshot: RunSnapshot | undefined; detail: RunDetail }): ReactNode {
  const open = Object.entries(snapshot?.open_tool_calls ?? {});
  const finished = [...detail.finished].reverse().slice(0, 10);
  return (
    <section className="panel" aria-labelledby="tools-title">
      <h2 id="tools-title">Tool calls</h2>
      {open.length === 0 && finished.length === 0 ? (
        <p className="muted">No tool calls.</p>
      ) : (
        <ul className="tools" data-testid="tool-calls">
          {open.map(([id, c]) => (
            <li key={`open-${id}`} className="tool tool-running" data-call-id={id}>
              <span className="tool-name">{text(c.tool) ?? "?"}</span>
              <span className="tool-input mono">{summarize(c.input)}</span>
              <span className="badge status-running">running</span>
            </li>
          ))}
          {finished.map((c) => (
            <li key={`done-${c.call_id}-${c.seq}`} className={`tool ${c.ok ? "tool-ok" : "tool-failed"}`} data-call-id={c.call_id}>
              <span className="tool-name">{c.tool}</span>
              <span className="tool-input mono">{c.error ?? (c.duration_ms !== undefined ? `${c.duration_ms} ms` : "")}</span>
              <span className={`badge ${c.ok ? "status-completed" : "status-failed"}`}>{c.ok ? "ok" : "failed"}</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

/** A tool input in one short line. */
function summarize(input: Json | undefined): string {
  if (input === undefined || input === null) return "";
  if (typeof input === "object" && !Array.isArray(input)) {
    const command = input.command;
    if (typeof command === "string") return command;
  }
  const s = typeof input === "string" ? input : JSON.stringify(input);
  return s.length > 120 ? `${s.slice(0, 119)}…` : s;
}

function AgentTextPanel({ detail }: { detail: RunDetail }): ReactNode {
  return (
    <section className="panel agent" aria-labelledby="agent-title">
      <h2 id="agent-title">Agent</h2>
      {detail.resetAt !== undefined && detail.resetAt > 0 && (
        <p className="muted">Text before seq {detail.resetAt} is not shown: the run was restored from a snapshot.</p>
      )}
      {detail.messages.length === 0 ? (
        <p className="muted">No agent text.</p>
      ) : (
        <div data-testid="agent-text">
          {detail.messages.map((m) => (
            <p key={`${m.kind}-${m.id}`} className={`agent-${m.kind}${m.done ? "" : " streaming"}`}>
              {m.text}
            </p>
          ))}
        </div>
      )}
    </section>
  );
}

function LogTail({ snapshot }: { snapshot: RunSnapshot | undefined }): ReactNode {
  const logs = snapshot?.recent_logs ?? [];
  return (
    <section className="panel logs" aria-labelledby="logs-title">
      <h2 id="logs-title">Log</h2>
      {logs.length === 0 ? (
        <p className="muted">No log lines.</p>
      ) : (
        <ol className="log mono" data-testid="log">
          {logs.map((l, i) => {
            const level = text(l.level) ?? "info";
            return (
              <li key={i} className={`log-line level-${level}`}>
                <span className="log-level">{level}</span>
                {text(l.source) !== undefined && <span className="log-source">{text(l.source)}</span>}
                <span className="log-message">{text(l.message) ?? ""}</span>
              </li>
            );
          })}
        </ol>
      )}
    </section>
  );
}
