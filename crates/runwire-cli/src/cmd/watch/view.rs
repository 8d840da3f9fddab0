//! Where the human view of `runwire watch` goes: one progress bar per run on a
//! terminal (lines scroll above them), plain lines otherwise. With several runs each
//! line starts with its run id.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use runwire_protocol::{RunId, RunSnapshot};

use super::render::Line;

/// The human view.
pub(crate) struct View {
    multi: Option<MultiProgress>,
    bars: BTreeMap<RunId, ProgressBar>,
    /// The last status line printed per run (plain output).
    last: BTreeMap<RunId, String>,
    /// More than one run: prefix lines with the run id.
    many: bool,
    /// Only status lines, one per run and change (no event lines).
    pub(crate) compact: bool,
}

impl View {
    pub(crate) fn new(runs: &[RunId], compact: bool) -> Self {
        let many = runs.len() > 1;
        let mut view = Self {
            multi: None,
            bars: BTreeMap::new(),
            last: BTreeMap::new(),
            many,
            compact,
        };
        if !std::io::stderr().is_terminal() {
            return view;
        }
        view.multi = Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        for r in runs {
            view.add_bar(r);
        }
        view
    }

    /// A run found later (`watch --prefix`): lines are prefixed with run ids from now
    /// on, and on a terminal it gets its bar.
    pub(crate) fn add(&mut self, run: &RunId) {
        self.many = true;
        self.add_bar(run);
    }

    fn add_bar(&mut self, run: &RunId) {
        let Some(multi) = &self.multi else { return };
        if self.bars.contains_key(run) {
            return;
        }
        let style =
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos:>3}% {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(100).with_style(style));
        bar.set_prefix(run.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars.insert(run.clone(), bar);
    }

    fn print(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        }
    }

    /// A line about one run (an event, a note).
    pub(crate) fn line(&self, run: &RunId, line: &Line) {
        if self.compact {
            return;
        }
        let text = if self.many {
            format!("[{run}] {}", line.text)
        } else {
            line.text.clone()
        };
        if line.dim && self.multi.is_some() {
            self.print(&format!("\x1b[2m{text}\x1b[0m"));
        } else {
            self.print(&text);
        }
    }

    /// A line about the connection, not about one run.
    pub(crate) fn notice(&self, text: &str) {
        self.print(text);
    }

    /// Shows a run's folded state: its bar, or (plain) a status line when its
    /// percentage changed (in compact mode: when anything shown changed).
    pub(crate) fn status(&mut self, run: &RunId, s: &RunSnapshot, streaming: Option<&str>) {
        let percent = s
            .progress
            .as_ref()
            .and_then(|p| p.percent)
            .map(|p| p.clamp(0.0, 100.0).round() as u64);
        let mut parts = Vec::new();
        if let Some(st) = s.status {
            parts.push(st.to_string());
        }
        if let Some(ph) = &s.phase {
            parts.push(format!("phase {ph}"));
        }
        if let Some(p) = &s.progress {
            parts.extend(p.step.clone());
            if let Some(tool) = &p.tool {
                parts.push(format!("tool {tool}"));
            }
        }
        let msg = parts.join(" · ");
        if let Some(bar) = self.bars.get(run) {
            bar.set_position(percent.unwrap_or(0));
            match streaming {
                Some(t) => bar.set_message(format!("{msg} · {}", tail(t, 60))),
                None => bar.set_message(msg),
            }
            return;
        }
        let shown = format!("{:>3}% {msg}", percent.unwrap_or(0));
        let changed = self.last.get(run) != Some(&shown);
        let worth = if self.compact {
            changed
        } else {
            percent.is_some() && self.last.get(run).map(|l| &l[..4]) != Some(&shown[..4])
        };
        if changed && worth {
            if self.many || self.compact {
                self.print(&format!("[{run}] {shown}"));
            } else {
                self.print(&shown);
            }
            self.last.insert(run.clone(), shown);
        }
    }

    /// Removes the bars.
    pub(crate) fn finish(&self) {
        for b in self.bars.values() {
            b.finish_and_clear();
        }
    }
}

/// The last `n` characters of `t`.
fn tail(t: &str, n: usize) -> &str {
    let count = t.chars().count();
    match t.char_indices().nth(count.saturating_sub(n)) {
        Some((i, _)) => &t[i..],
        None => t,
    }
}
