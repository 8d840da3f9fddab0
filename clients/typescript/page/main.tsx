/**
 * Entry of the live run page: one `RunwireClient` on this origin's `/v1/stream`, the
 * React tree of `app.tsx` under its `RunwireProvider`.
 *
 * No cursor store: a reload replays each run from its start, so that the agent text,
 * which no snapshot carries (spec §3.7), is whole again. A token, when the server asks
 * for one (spec §7), is read from `sessionStorage` key `runwire.page.token` before every
 * attempt (`RW-AUTH-9`) and sent in `hello`, never in the URL (`RW-AUTH-1`).
 */

import { createRoot } from "react-dom/client";
import { RunwireClient } from "../src/index.js";
import { RunwireProvider } from "../src/react.js";
import { App } from "./app.js";
import "./page.css";

const url = new URL("/v1/stream", location.href);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";

const client = new RunwireClient({
  url: url.href,
  token: () => sessionStorage.getItem("runwire.page.token") ?? undefined,
  clientInfo: { name: "runwire-page", version: "0.1.0" },
});

const root = document.getElementById("root");
if (root !== null) {
  createRoot(root).render(
    <RunwireProvider client={client}>
      <App />
    </RunwireProvider>,
  );
}
