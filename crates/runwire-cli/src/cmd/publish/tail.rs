//! `runwire publish --tail FILE`: follows a growing text file, like `tail -f` from its
//! first line, and turns each complete line into a `log.line` event (spec §3.5, one
//! line per event without its newline, `RW-TYPE-9`). A file that shrinks was
//! truncated or replaced: it is read again from its start.

use std::{
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    time::Duration,
};

use anyhow::Context;
use runwire_protocol::{LogLevel, LogLineData, http::NewEvent};
use tokio::sync::mpsc;

use super::stream::{Item, Keys, Source};

/// How often the file is checked for growth once it has been read to its end.
const POLL: Duration = Duration::from_millis(100);

/// The `log.line` members every line gets.
pub(super) struct LineEvents {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub(super) level: String,
    /// The `source` member; `None`: the file's name.
    pub(super) source: Option<String>,
}

/// Follows `path` on a thread until the sender goes away.
pub(super) fn follow(path: PathBuf, how: LineEvents, keys: Keys) -> anyhow::Result<Source> {
    let name = path.display().to_string();
    let mut file = std::fs::File::open(&path).with_context(|| format!("--tail {name}"))?;
    let level: LogLevel =
        serde_json::from_value(serde_json::Value::String(how.level)).context("--level")?;
    let source = how
        .source
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()));
    let (tx, rx) = mpsc::channel(1000);
    std::thread::Builder::new()
        .name("publish-tail".into())
        .spawn(move || {
            let mut pos = 0u64;
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = Vec::new();
            loop {
                let len = match file.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => {
                        let _ = tx.blocking_send(Item::Failed(anyhow::anyhow!("{name}: {e}")));
                        return;
                    }
                };
                if len < pos {
                    // Truncated (or rotated in place): start over.
                    pos = 0;
                    pending.clear();
                }
                buf.clear();
                let read = file
                    .seek(SeekFrom::Start(pos))
                    .and_then(|_| file.read_to_end(&mut buf));
                match read {
                    Ok(0) => {
                        if tx.is_closed() {
                            return;
                        }
                        std::thread::sleep(POLL);
                        continue;
                    }
                    Ok(n) => pos += n as u64,
                    Err(e) => {
                        let _ = tx.blocking_send(Item::Failed(anyhow::anyhow!("{name}: {e}")));
                        return;
                    }
                }
                pending.extend_from_slice(&buf);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&line[..nl]);
                    let text = text.strip_suffix('\r').unwrap_or(&text);
                    let mut e = NewEvent::new(LogLineData {
                        level,
                        message: text.to_owned(),
                        source: source.clone(),
                    });
                    keys.fill(&mut e);
                    if tx.blocking_send(Item::Event(e)).is_err() {
                        return;
                    }
                }
            }
        })
        .context("starting the tail thread")?;
    Ok(rx)
}
