//! Client faults: the proxy between the mock server and a correct adapter, and the
//! filter on the adapter's output that makes the client appear to break a rule.

use super::*;

/// Runs an adapter through a client fault: the proxy between the mock and the
/// adapter, the output filter between the adapter and the mock's application sink.
pub(crate) struct FaultyClient {
    proxy: Proxy,
    fault: ClientFault,
}

impl FaultyClient {
    pub(crate) async fn start(mock_addr: SocketAddr, fault: ClientFault) -> Result<Self, Error> {
        let proxy = Proxy::start(mock_addr, Fault::Client(fault)).await?;
        Ok(Self { proxy, fault })
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "ws://{}{}",
            self.proxy.addr(),
            runwire_protocol::STREAM_PATH
        )
    }

    /// Spawns the adapter with `env` (its URL replaced) and feeds its filtered output
    /// to `sink`.
    pub(crate) fn spawn(
        &mut self,
        program: &std::ffi::OsStr,
        args: &[std::ffi::OsString],
        env: Vec<(String, String)>,
        sink: runwire_mock::AppSink,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let url = self.url();
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                if k == "RUNWIRE_URL" {
                    (k, url.clone())
                } else {
                    (k, v)
                }
            })
            .collect();
        env.extend(self.fault.env());
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Target(format!("cannot spawn the adapter: {e}")))?;
        // The adapter's waits for a CPU count as lateness in the mock's judgments.
        if let Some(pid) = child.id() {
            sink.watch_process(pid);
        }
        let fault = self.fault;
        let shared = Arc::clone(&self.proxy.shared);
        let out = child.stdout.take();
        Ok(tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut held: Option<String> = None;
            let mut lines_filter = LineFilter::default();
            if let Some(out) = out {
                let mut lines = tokio::io::BufReader::new(out).lines();
                loop {
                    let crash = fault == ClientFault::CrashOnUnknownType
                        && shared.lock().map(|s| s.unknown_seen).unwrap_or(false);
                    if crash {
                        let _ = child.start_kill();
                        break;
                    }
                    let next = tokio::time::timeout(
                        std::time::Duration::from_millis(20),
                        lines.next_line(),
                    )
                    .await;
                    let line = match next {
                        Err(_) => continue,
                        Ok(Ok(Some(l))) => l,
                        Ok(_) => break,
                    };
                    let is_event = line.contains("\"kind\":\"event\"");
                    match fault {
                        ClientFault::NoDedup if is_event => {
                            sink.raw_line(&line);
                            sink.raw_line(&line);
                        }
                        ClientFault::NoOrdering if is_event => match held.take() {
                            None => held = Some(line),
                            Some(prev) => {
                                sink.raw_line(&line);
                                sink.raw_line(&prev);
                            }
                        },
                        // A `folded` line follows every event of a folding adapter; it
                        // must not release the held event, or nothing is ever swapped.
                        ClientFault::NoOrdering if line.contains("\"kind\":\"folded\"") => {
                            sink.raw_line(&line);
                        }
                        _ => {
                            if let Some(p) = held.take() {
                                sink.raw_line(&p);
                            }
                            for l in lines_filter.apply(fault, line) {
                                sink.raw_line(&l);
                            }
                        }
                    }
                }
            }
            if let Some(p) = held.take() {
                sink.raw_line(&p);
            }
            let status = child.wait().await.ok();
            sink.exit(status.and_then(|s| s.code()));
        }))
    }
}

/// The event types the folding table of spec §8.3 names.
pub(super) const FOLDED_TYPES: &[&str] = &[
    "run.status",
    "run.progress",
    "run.metadata",
    "run.phase",
    "log.line",
    "tool.started",
    "tool.finished",
    "artifact.created",
    "todo.updated",
];

/// Rewrites the adapter's lines for the faults that break what the client reports
/// rather than what it sends.
#[derive(Debug, Default)]
pub(super) struct LineFilter {
    /// Per run, the last `folded` snapshot printed.
    last: BTreeMap<String, serde_json::Map<String, Value>>,
    /// Per run, members a broken fold keeps (or adds) in every later `folded` line.
    kept: BTreeMap<String, serde_json::Map<String, Value>>,
    /// The `platform` line was printed ([`ClientFault::BrowserWithoutReport`]).
    platform_sent: bool,
}

impl LineFilter {
    fn apply(&mut self, fault: ClientFault, line: String) -> Vec<String> {
        if fault == ClientFault::BrowserWithoutReport {
            let mut out = Vec::new();
            if !self.platform_sent {
                self.platform_sent = true;
                out.push(json!({"kind": "platform", "profile": "browser"}).to_string());
            }
            let silent = serde_json::from_str::<Value>(&line).is_ok_and(|v| {
                v.get("kind").and_then(Value::as_str) == Some("error")
                    && v.get("code").and_then(Value::as_str) == Some("invalid_frame")
            });
            if !silent {
                out.push(line);
            }
            return out;
        }
        if fault == ClientFault::ReportsTerminalErrorTwice
            && let Ok(mut v) = serde_json::from_str::<Value>(&line)
            && v.get("kind").and_then(Value::as_str) == Some("error")
            && v.get("terminal").and_then(Value::as_bool) == Some(true)
        {
            // The same error once more, first, as if reported when the frame came.
            v["terminal"] = json!(false);
            return vec![v.to_string(), line];
        }
        vec![self.apply_one(fault, line)]
    }

    fn apply_one(&mut self, fault: ClientFault, line: String) -> String {
        let Ok(mut v) = serde_json::from_str::<Value>(&line) else {
            return line;
        };
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let run = v
            .get("run_id")
            .or_else(|| v.pointer("/event/run_id"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match (fault, kind.as_str()) {
            (ClientFault::OwnErrorCodes, "error") => {
                let code = match v.get("code").and_then(Value::as_str) {
                    Some("welcome_timeout") => "timeout",
                    Some("protocol_violation") => "bad_version",
                    _ => return line,
                };
                v["code"] = json!(code);
            }
            (ClientFault::DropsErrorDetails, "error") => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("supported_versions");
                    o.remove("last_error_code");
                }
            }
            (ClientFault::FoldsResetOntoOldState, "reset") => {
                // The old state's members the snapshot lacks survive the "fold".
                let snap = v.get("snapshot").and_then(Value::as_object);
                let mut kept = serde_json::Map::new();
                if let (Some(old), Some(snap)) = (self.last.get(&run), snap) {
                    for (k, val) in old {
                        if !snap.contains_key(k) {
                            kept.insert(k.clone(), val.clone());
                        }
                    }
                }
                self.kept.insert(run, kept);
                return line;
            }
            (ClientFault::FoldsUnknownTypes, "event") => {
                let ty = v
                    .pointer("/event/type")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let kept = self.kept.entry(run).or_default();
                if FOLDED_TYPES.contains(&ty) {
                    // A real status or phase event sets the member again.
                    let data = v.pointer("/event/data").and_then(Value::as_object);
                    for k in ["status", "phase"] {
                        if data.is_some_and(|d| d.contains_key(k)) {
                            kept.remove(k);
                        }
                    }
                } else if let Some(d) = v.pointer("/event/data").and_then(Value::as_object) {
                    for k in ["status", "phase"] {
                        if let Some(x) = d.get(k).filter(|x| x.is_string()) {
                            kept.insert(k.to_owned(), x.clone());
                        }
                    }
                }
                return line;
            }
            (ClientFault::FoldsResetOntoOldState | ClientFault::FoldsUnknownTypes, "folded") => {
                if let Some(snap) = v.get_mut("snapshot").and_then(Value::as_object_mut) {
                    if let Some(kept) = self.kept.get(&run) {
                        for (k, val) in kept {
                            if fault == ClientFault::FoldsUnknownTypes || !snap.contains_key(k) {
                                snap.insert(k.clone(), val.clone());
                            }
                        }
                    }
                    self.last.insert(run, snap.clone());
                }
            }
            _ => return line,
        }
        v.to_string()
    }
}

impl std::fmt::Debug for FaultyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyClient")
            .field("fault", &self.fault)
            .finish()
    }
}
