//! Events read while they are sent: a reader thread turns lines into events as they
//! arrive; the sender takes the first waiting event, adds whatever else arrives within
//! the batch window (at most [`APPEND_MAX_EVENTS`]) and appends them in one request.
//! A producer that writes a line every few seconds sees each line appended within the
//! window; a fast one gets batches.

use std::{
    io::BufRead,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use anyhow::Context;
use runwire_protocol::http::{APPEND_MAX_EVENTS, NewEvent};
use tokio::sync::mpsc;

use super::send::{Sender, acknowledged};

/// What a reader hands the sender.
#[allow(clippy::large_enum_variant)] // nearly every item is an event; boxing it buys nothing
pub(super) enum Item {
    /// The next event.
    Event(NewEvent),
    /// The input is bad (a line that is not an event, an unreadable file): send what
    /// came before, then stop with this error.
    Failed(anyhow::Error),
}

/// The events of a reader, in input order; the channel closes at end of input.
pub(super) type Source = mpsc::Receiver<Item>;

/// Idempotency keys for events that carry none: one random prefix per invocation and
/// a counter, so a retried request repeats the keys of its events.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl Keys {
    pub(super) fn new() -> Self {
        Self {
            prefix: format!("publish-{}", uuid::Uuid::new_v4().simple()).into(),
            next: Arc::default(),
        }
    }

    /// Gives `e` a key if it has none.
    pub(super) fn fill(&self, e: &mut NewEvent) {
        if e.idempotency_key.is_none() {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            e.idempotency_key = Some(format!("{}-{i}", self.prefix));
        }
    }
}

/// Reads JSON Lines from `path` (`-`: stdin) on a thread, one event per non-empty
/// line, as the lines arrive.
pub(super) fn lines(path: PathBuf, keys: Keys) -> anyhow::Result<Source> {
    let name = path.display().to_string();
    let input: Box<dyn BufRead + Send> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&path).with_context(|| format!("reading {name}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let (tx, rx) = mpsc::channel(APPEND_MAX_EVENTS);
    std::thread::Builder::new()
        .name("publish-reader".into())
        .spawn(move || {
            for (i, line) in input.lines().enumerate() {
                let item = match line {
                    Ok(l) if l.trim().is_empty() => continue,
                    Ok(l) => match super::parse_event(&l, &format!("{name}:{}", i + 1)) {
                        Ok(mut e) => {
                            keys.fill(&mut e);
                            Item::Event(e)
                        }
                        Err(e) => Item::Failed(e),
                    },
                    Err(e) => Item::Failed(anyhow::anyhow!("reading {name}: {e}")),
                };
                let stop = matches!(item, Item::Failed(_));
                if tx.blocking_send(item).is_err() || stop {
                    return;
                }
            }
        })
        .context("starting the reader thread")?;
    Ok(rx)
}

/// What was sent.
#[derive(Debug, Default)]
struct Tally {
    events: usize,
    requests: usize,
    duplicates: usize,
}

/// Sends the events of `source` as they come, in batches bounded by `window`, until
/// the input ends (or Ctrl-C), then prints a summary. Exit 0 when everything was
/// appended (130 after Ctrl-C), 1 when a request failed for good; an input error is
/// an error (exit 2) after what came before it was sent, and so is an input without
/// events when `require_events`.
pub(super) async fn publish(
    sender: &Sender,
    mut source: Source,
    window: Duration,
    require_events: bool,
) -> anyhow::Result<ExitCode> {
    let mut tally = Tally::default();
    let mut input_error = None;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let first = tokio::select! {
            item = source.recv() => item,
            _ = &mut ctrl_c => {
                interrupted = true;
                None
            }
        };
        let Some(first) = first else { break };
        let mut batch = Vec::new();
        match first {
            Item::Event(e) => batch.push(e),
            Item::Failed(e) => {
                input_error = Some(e);
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + window;
        while batch.len() < APPEND_MAX_EVENTS {
            match tokio::time::timeout_at(deadline, source.recv()).await {
                Ok(Some(Item::Event(e))) => batch.push(e),
                Ok(Some(Item::Failed(e))) => {
                    input_error = Some(e);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        match sender.append(&batch).await {
            Ok(r) => {
                println!("{}", acknowledged(&r));
                tally.events += batch.len();
                tally.requests += 1;
                tally.duplicates += r.events.iter().filter(|e| e.duplicate).count();
            }
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("{}", summary(&tally));
                return Ok(ExitCode::from(1));
            }
        }
        if input_error.is_some() {
            break;
        }
    }
    eprintln!("{}", summary(&tally));
    if let Some(e) = input_error {
        return Err(e);
    }
    if interrupted {
        return Ok(ExitCode::from(130));
    }
    if require_events && tally.events == 0 {
        anyhow::bail!("no events in the input");
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(t: &Tally) -> String {
    let dup = match t.duplicates {
        0 => String::new(),
        n => format!(", {n} of them already present"),
    };
    format!(
        "published {} events in {} requests{dup}",
        t.events, t.requests
    )
}
