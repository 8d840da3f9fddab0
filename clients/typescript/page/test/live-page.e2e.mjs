// The live run page in headless Chromium against a real `runwire serve` (port 0, memory
// store): events appended over HTTP (spec §4.2) must show up on the page, and the
// connection status must follow the server. Synchronizes on what the page shows, never
// on time.
//
//   RUNWIRE=path/to/runwire node --test page/test/live-page.e2e.mjs
//
// RUNWIRE_CHROMIUM overrides /usr/bin/chromium. With RUNWIRE_PAGE_SCREENSHOT=FILE the
// page is also saved as a PNG mid-run (docs/images/live-page.png is made so).

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const RUNWIRE = process.env.RUNWIRE;
const CHROMIUM = process.env.RUNWIRE_CHROMIUM || "/usr/bin/chromium";
const RUN = "page-e2e-build-7";
const WAIT = { timeout: 20_000 };

let server;
let base;
let context;
let profile;
const problems = [];

/** Starts `runwire serve` on a free port; resolves with its base URL (its first stdout line). */
function startServer() {
  if (!RUNWIRE) throw new Error("RUNWIRE must name the runwire binary (cargo build -p runwire-cli)");
  const child = spawn(RUNWIRE, ["serve", "--listen", "127.0.0.1:0", "--store", "memory"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUNWIRE_LOG: "warn" },
  });
  return new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`runwire serve exited with ${code} before listening`)));
    createInterface({ input: child.stdout }).once("line", (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m) resolve({ child, base: `http://${m[1]}` });
      else reject(new Error(`unexpected first line of runwire serve: ${line}`));
    });
  });
}

async function append(events) {
  const r = await fetch(`${base}/v1/runs/${RUN}/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  assert.equal(r.status, 200, await r.text());
}

before(async () => {
  ({ child: server, base } = await startServer());
  profile = mkdtempSync(join(tmpdir(), "runwire-page-e2e-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await context?.close();
  if (server && server.exitCode === null) server.kill("SIGKILL");
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test("the page shows a run live and follows the connection", async () => {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection to .* failed/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  const response = await page.goto(`${base}/?run=${RUN}`);
  assert.equal(response?.status(), 200);
  assert.match(response?.headers()["content-security-policy"] ?? "", /script-src 'self'/);

  // Before any event: connected, waiting.
  await page.locator('[role="status"][data-status="connected"]', { hasText: "Connected" }).waitFor(WAIT);
  await page.getByTestId("waiting").waitFor(WAIT);

  await append([
    { type: "run.metadata", data: { title: "Fix flaky login test", project: "acme/web", agent: "builder-bot", model: "example-model-1", labels: { branch: "main" } } },
    { type: "run.status", data: { status: "running" } },
    { type: "run.phase", data: { phase: "test", message: "Running the suite" } },
    { type: "todo.updated", data: { items: [
      { id: "1", text: "Reproduce the flaky test", status: "completed" },
      { id: "2", text: "Inject a fake clock", status: "in_progress" },
      { id: "3", text: "Run the suite 50 times", status: "pending" },
    ] } },
    { type: "agent.thinking", data: { message_id: "think-1", delta: "The retry loop sleeps on the real clock.", done: true } },
    { type: "agent.message", data: { message_id: "msg-1", delta: "I will replace the sleep " } },
    { type: "tool.started", data: { call_id: "call-1", tool: "edit", input: { path: "src/auth/retry.rs" } } },
    { type: "tool.finished", data: { call_id: "call-1", tool: "edit", ok: true, duration_ms: 41 } },
    { type: "tool.started", data: { call_id: "call-2", tool: "shell", input: { command: "cargo test -p web login::" } } },
    { type: "log.line", data: { level: "info", message: "compiling web v0.3.1", source: "cargo" } },
    { type: "log.line", data: { level: "warn", message: "test login::retries took 4.2s", source: "cargo test" } },
    { type: "run.progress", data: { percent: 42, step: "Running unit tests", current: 21, total: 50, tool: "cargo" } },
  ]);

  const status = page.getByTestId("status");
  await page.locator('[data-testid="status"]', { hasText: /^running$/ }).waitFor(WAIT);
  await page.getByRole("heading", { name: "Fix flaky login test" }).waitFor(WAIT);
  await page.getByTestId("progress-text").filter({ hasText: "42% · Running unit tests · 21/50 · cargo" }).waitFor(WAIT);
  assert.equal(await page.getByTestId("progress").evaluate((e) => e.value), 42);
  assert.equal(await page.getByTestId("phase").textContent(), "test");
  await page.getByTestId("todos").locator('li[data-status="in_progress"]', { hasText: "Inject a fake clock" }).waitFor(WAIT);
  await page.getByTestId("tool-calls").locator('li[data-call-id="call-2"]', { hasText: "cargo test -p web login::" }).filter({ hasText: "running" }).waitFor(WAIT);
  await page.getByTestId("tool-calls").locator('li[data-call-id="call-1"]', { hasText: "ok" }).waitFor(WAIT);
  await page.getByTestId("log").locator("li", { hasText: "test login::retries took 4.2s" }).waitFor(WAIT);
  await page.getByTestId("agent-text").locator("p.streaming", { hasText: "I will replace the sleep" }).waitFor(WAIT);
  await page.getByTestId("recent-runs").locator("li", { hasText: "Fix flaky login test" }).waitFor(WAIT);
  assert.equal(await page.getByTestId("waiting").count(), 0);
  if (process.env.RUNWIRE_PAGE_SCREENSHOT) await page.screenshot({ path: process.env.RUNWIRE_PAGE_SCREENSHOT });

  await append([
    { type: "agent.message", data: { message_id: "msg-1", delta: "with a fake clock.", done: true } },
    { type: "tool.finished", data: { call_id: "call-2", tool: "shell", ok: false, error: "1 test failed", duration_ms: 24812 } },
    { type: "run.progress", data: { percent: 100 } },
    { type: "run.status", data: { status: "failed", reason: "1 test failed" } },
  ]);
  await page.locator('[data-testid="status"]', { hasText: /^failed$/ }).waitFor(WAIT);
  await page.getByTestId("status-reason").filter({ hasText: "1 test failed" }).waitFor(WAIT);
  assert.equal(await page.getByTestId("progress").evaluate((e) => e.value), 100);
  await page.getByTestId("tool-calls").locator('li[data-call-id="call-2"]', { hasText: "failed" }).waitFor(WAIT);
  // RW-TYPE-13: the deltas of one message, concatenated in seq order.
  await page.getByTestId("agent-text").locator("p:not(.streaming)", { hasText: "I will replace the sleep with a fake clock." }).waitFor(WAIT);
  await page.getByTestId("recent-runs").locator("li", { hasText: "failed" }).waitFor(WAIT);

  // A reload replays the run: the same state, agent text included, and the run is
  // still in the list of recent runs.
  await page.reload();
  await page.locator('[data-testid="status"]', { hasText: /^failed$/ }).waitFor(WAIT);
  await page.getByTestId("agent-text").locator("p", { hasText: "I will replace the sleep with a fake clock." }).waitFor(WAIT);
  await page.getByTestId("recent-runs").locator("li", { hasText: "Fix flaky login test" }).waitFor(WAIT);
  assert.equal(await status.textContent(), "failed");

  // The server goes away (graceful shutdown, spec §16): the status says reconnecting.
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await page.locator('[role="status"][data-status="reconnecting"]', { hasText: /Reconnecting in \d+ s/ }).waitFor(WAIT);
  await exited;

  assert.deepEqual(problems, [], "no script error and no Content-Security-Policy violation");
});
