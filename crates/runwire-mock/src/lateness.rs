//! Lateness: how late this process's timers and tasks run, measured all the time.
//!
//! A conformance verdict on timing ("the ping came 40 ms after the interval", "the
//! client reconnected 30 ms after its envelope") is only as good as the clock work of
//! the machine that measured it. On a busy CI runner the kit's own tasks, the adapter
//! it spawned and the server it runs in process are all descheduled for tens or
//! hundreds of milliseconds at a time; a judgment that misses its bound by less than
//! that says nothing about the implementation.
//!
//! A [`Probe`] is a task on the async runtime that sleeps for a short period again and
//! again and records by how much each sleep overran. Its samples cover every moment of
//! a run, so a timing judgment over an interval asks the probe for the worst lateness
//! seen during that interval ([`Probe::max_between`]) and compares it with the margin
//! by which the judgment failed: a miss within the measured lateness is
//! *inconclusive*, never a violation (see `docs/ci-guide.md`, "Inconclusive").
//!
//! The probe runs on the same runtime as the kit (and, in the bundled mode, as the
//! reference server), so it sees both the operating system descheduling the process
//! and the runtime's workers being busy with other tasks. It costs about 200 wake-ups
//! a second.
//!
//! A single sample only shows a stall that covers its wake-up; a task is delayed by
//! every preemption of its thread, also the short ones between two samples. So at
//! each wake-up the probe also reads how long its thread has waited for a CPU (Linux
//! scheduler statistics), and [`Probe::threads_waited`] sums that over an interval.
//! A client adapter is another process, descheduled on its own account:
//! [`RunQueueWait`] measures its threads' CPU wait the same way. A timing judgment
//! adds the three up (the mock's `Shared::violate_timing`).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How long a probe sleeps between samples.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(5);

/// Samples older than this are dropped (a judgment never looks further back).
const KEEP: Duration = Duration::from_secs(600);

/// One sample: a sleep that started at `begin_us` and ended at `end_us` (µs since the
/// probe started), `late_us` later than asked.
#[derive(Debug, Clone, Copy)]
struct Sample {
    begin_us: u64,
    end_us: u64,
    late_us: u64,
    /// The thread the probe woke up on and its cumulative run-queue wait in ns
    /// (Linux; `None` elsewhere).
    thread: Option<(u64, u64)>,
}

/// The calling thread's id and cumulative run-queue wait in ns: the time it was ready
/// to run but waited for a CPU (Linux `/proc/thread-self/schedstat`).
fn this_thread_wait() -> Option<(u64, u64)> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid = link.file_name()?.to_str()?.parse().ok()?;
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let wait = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((tid, wait))
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    period: Duration,
    samples: Mutex<VecDeque<Sample>>,
    /// When the sleep in progress began (µs since `origin`, + 1; 0 = none).
    current_begin: AtomicU64,
}

/// Measures timer lateness continuously; cheap to clone (an `Arc`). The measuring task
/// stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Probe {
    inner: Arc<Inner>,
}

/// What a probe saw over an interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatenessSummary {
    /// Samples that overlap the interval.
    pub samples: usize,
    /// Median lateness, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
}

impl Probe {
    /// Starts a probe on the current tokio runtime, sleeping `period` between samples.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(period: Duration) -> Self {
        let inner = Arc::new(Inner {
            origin: Instant::now(),
            period,
            samples: Mutex::new(VecDeque::new()),
            current_begin: AtomicU64::new(0),
        });
        tokio::spawn(measure(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Starts a probe with [`DEFAULT_PERIOD`].
    pub fn start_default() -> Self {
        Self::start(DEFAULT_PERIOD)
    }

    fn us(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.inner.origin).as_micros())
            .unwrap_or(u64::MAX)
    }

    /// The lateness of every sample overlapping `[from, to]`, including the sleep in
    /// progress (which is at least as late as the time it has overrun so far).
    fn overlapping(&self, from: Instant, to: Instant) -> Vec<u64> {
        let (a, b) = (self.us(from.min(to)), self.us(from.max(to)));
        let mut out: Vec<u64> = self
            .inner
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .take_while(|s| s.end_us >= a)
            .filter(|s| s.begin_us <= b)
            .map(|s| s.late_us)
            .collect();
        let cur = self.inner.current_begin.load(Ordering::Acquire);
        if cur > 0 {
            let begin = cur - 1;
            let now = self.us(Instant::now());
            let period = u64::try_from(self.inner.period.as_micros()).unwrap_or(0);
            if begin <= b {
                out.push(now.saturating_sub(begin).saturating_sub(period));
            }
        }
        out
    }

    /// The worst lateness seen during `[from, to]` (either order). Zero when the
    /// probe has no sample there (it started later).
    pub fn max_between(&self, from: Instant, to: Instant) -> Duration {
        Duration::from_micros(
            self.overlapping(from, to)
                .into_iter()
                .max()
                .unwrap_or_default(),
        )
    }

    /// How long the threads this probe ran on (the runtime's workers) waited for a CPU
    /// during `[from, to]` (either order), summed over the threads: a task is delayed
    /// by every time its thread was descheduled, also by the short ones between two
    /// samples that no single sample's lateness shows. Rounded outwards to the samples
    /// around the interval; zero where the kernel does not say (not Linux).
    pub fn threads_waited(&self, from: Instant, to: Instant) -> Duration {
        use std::collections::BTreeMap;
        let (a, b) = (self.us(from.min(to)), self.us(from.max(to)));
        // Per thread: its reading at the first sample at or after the interval's end
        // (else its last one), and at the last sample at or before its start (else
        // its first one after the start).
        let mut end: BTreeMap<u64, u64> = BTreeMap::new();
        let mut start: BTreeMap<u64, u64> = BTreeMap::new();
        let mut first_inside: BTreeMap<u64, u64> = BTreeMap::new();
        let samples = self.inner.samples.lock().unwrap_or_else(|e| e.into_inner());
        for s in samples.iter().rev() {
            let Some((tid, wait)) = s.thread else {
                continue;
            };
            if s.end_us >= b {
                // Scanning backwards: the earliest such reading stays.
                end.insert(tid, wait);
                continue;
            }
            end.entry(tid).or_insert(wait);
            if s.end_us > a {
                first_inside.insert(tid, wait);
                continue;
            }
            start.entry(tid).or_insert(wait);
            if end.keys().all(|t| start.contains_key(t)) {
                break;
            }
        }
        let ns = end
            .iter()
            .map(|(tid, e)| {
                let s = start.get(tid).or(first_inside.get(tid)).unwrap_or(e);
                e.saturating_sub(*s)
            })
            .sum();
        Duration::from_nanos(ns)
    }

    /// Median, 99th percentile and worst lateness during `[from, to]`.
    pub fn summary(&self, from: Instant, to: Instant) -> LatenessSummary {
        let mut v = self.overlapping(from, to);
        if v.is_empty() {
            return LatenessSummary::default();
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            v[i.min(v.len() - 1)] as f64 / 1000.0
        };
        LatenessSummary {
            samples: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: v[v.len() - 1] as f64 / 1000.0,
        }
    }

    /// The sleep period between samples.
    pub fn period(&self) -> Duration {
        self.inner.period
    }
}

async fn measure(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let period = inner.period;
        let begin = Instant::now();
        let begin_us =
            u64::try_from(begin.saturating_duration_since(inner.origin).as_micros()).unwrap_or(0);
        inner.current_begin.store(begin_us + 1, Ordering::Release);
        drop(inner);
        tokio::time::sleep(period).await;
        let end = Instant::now();
        let Some(inner) = weak.upgrade() else { return };
        let end_us =
            u64::try_from(end.saturating_duration_since(inner.origin).as_micros()).unwrap_or(0);
        let late_us = u64::try_from(
            end.saturating_duration_since(begin)
                .saturating_sub(period)
                .as_micros(),
        )
        .unwrap_or(u64::MAX);
        let keep_us = u64::try_from(KEEP.as_micros()).unwrap_or(u64::MAX);
        let mut s = inner.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back(Sample {
            begin_us,
            end_us,
            late_us,
            thread: this_thread_wait(),
        });
        while s.front().is_some_and(|f| f.end_us + keep_us < end_us) {
            s.pop_front();
        }
        drop(s);
        inner.current_begin.store(0, Ordering::Release);
    }
}

/// Measures how long another process (the client's adapter) waited for a CPU: the
/// time its threads were ready to run but not running (Linux
/// `/proc/PID/task/TID/schedstat`, second field), sampled every [`DEFAULT_PERIOD`].
///
/// The [`Probe`] sees how late this process runs; an adapter is another process, and
/// on a loaded machine it is descheduled on its own account: a correct client's
/// reconnect or pong comes late by the time it spent waiting for a CPU, which only
/// the kernel knows. [`RunQueueWait::between`] is that time over an interval, added to
/// the probe's lateness when a judgment involves the adapter. Cheap to clone; the
/// sampling task stops when the process is gone or the last clone is dropped.
#[derive(Debug, Clone)]
pub struct RunQueueWait {
    inner: Arc<WaitInner>,
}

#[derive(Debug)]
struct WaitInner {
    pid: u32,
    origin: Instant,
    /// (µs since `origin`, cumulative run-queue wait in ns since the first sample).
    samples: Mutex<VecDeque<(u64, u64)>>,
}

/// Per thread of `pid`: its cumulative run-queue wait in ns (`None`: not readable,
/// e.g. not Linux or the process is gone).
fn read_waits(pid: u32) -> Option<Vec<(u64, u64)>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u64>().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        if let Some(wait) = text.split_whitespace().nth(1).and_then(|w| w.parse().ok()) {
            out.push((tid, wait));
        }
    }
    (!out.is_empty()).then_some(out)
}

impl RunQueueWait {
    /// Starts sampling process `pid` on the current tokio runtime; `None` when its
    /// scheduler statistics cannot be read (not Linux, or the process is gone).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(pid: u32) -> Option<Self> {
        let first = read_waits(pid)?;
        let inner = Arc::new(WaitInner {
            pid,
            origin: Instant::now(),
            samples: Mutex::new(VecDeque::from([(0, 0)])),
        });
        tokio::spawn(sample_waits(Arc::downgrade(&inner), first));
        Some(Self { inner })
    }

    /// A sampler that does not sample: it says the process waited `waited` during
    /// `[at, at + span]` (tests of the judgments that use it).
    #[cfg(test)]
    pub(crate) fn fixed(at: Instant, span: Duration, waited: Duration) -> Self {
        let inner = Arc::new(WaitInner {
            pid: 0,
            origin: at,
            samples: Mutex::new(VecDeque::from([
                (0, 0),
                (
                    u64::try_from(span.as_micros()).unwrap_or(u64::MAX),
                    u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
                ),
            ])),
        });
        Self { inner }
    }

    /// The process sampled.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    fn us(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.inner.origin).as_micros())
            .unwrap_or(u64::MAX)
    }

    /// How long the process waited for a CPU during `[from, to]` (either order),
    /// rounded outwards to the samples around the interval (at most one period more on
    /// each side). Zero before the first sample.
    pub fn between(&self, from: Instant, to: Instant) -> Duration {
        let (a, b) = (self.us(from.min(to)), self.us(from.max(to)));
        let s = self.inner.samples.lock().unwrap_or_else(|e| e.into_inner());
        let start = s
            .iter()
            .rev()
            .find(|(t, _)| *t <= a)
            .or(s.front())
            .map_or(0, |x| x.1);
        let end = s
            .iter()
            .find(|(t, _)| *t >= b)
            .or(s.back())
            .map_or(0, |x| x.1);
        Duration::from_nanos(end.saturating_sub(start))
    }
}

async fn sample_waits(weak: Weak<WaitInner>, first: Vec<(u64, u64)>) {
    let mut last: std::collections::BTreeMap<u64, u64> = first.into_iter().collect();
    let mut total: u64 = 0;
    loop {
        tokio::time::sleep(DEFAULT_PERIOD).await;
        let Some(inner) = weak.upgrade() else { return };
        let Some(now) = read_waits(inner.pid) else {
            return;
        };
        for (tid, wait) in now {
            // A thread seen for the first time waited all of its count since it began,
            // which is after the previous sample's threads were read.
            let before = last.insert(tid, wait).unwrap_or(0);
            total = total.saturating_add(wait.saturating_sub(before));
        }
        let t = u64::try_from(inner.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        let keep_us = u64::try_from(KEEP.as_micros()).unwrap_or(u64::MAX);
        let mut s = inner.samples.lock().unwrap_or_else(|e| e.into_inner());
        s.push_back((t, total));
        while s.len() > 2 && s.front().is_some_and(|f| f.0 + keep_us < t) {
            s.pop_front();
        }
    }
}

/// A timing judgment that missed its bound: by how much, and over which interval the
/// machine's lateness could have caused it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimingMiss {
    /// How far outside its bound the measured time fell.
    pub margin: Duration,
    /// The start of the interval the judgment measured.
    pub from: Instant,
    /// Its end.
    pub to: Instant,
}

impl TimingMiss {
    /// A miss by `margin` over `[from, to]` (tokio or std instants).
    pub fn new(margin: Duration, from: impl Into<Instant>, to: impl Into<Instant>) -> Self {
        Self {
            margin,
            from: from.into(),
            to: to.into(),
        }
    }

    /// The lateness `probe` measured over this miss's interval, and whether it
    /// explains the miss (the margin is at most the lateness): then the judgment is
    /// inconclusive, not a violation.
    pub fn judge(&self, probe: &Probe) -> (Duration, bool) {
        let late = probe.max_between(self.from, self.to);
        (late, self.margin <= late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocked_runtime_shows_as_lateness() {
        let probe = Probe::start(Duration::from_millis(2));
        // Let the probe take a few samples on an idle runtime.
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let idle = probe.max_between(t0, Instant::now());
        // Block both workers: the probe cannot run for 120 ms.
        let t1 = Instant::now();
        let h1 = tokio::spawn(async { std::thread::sleep(Duration::from_millis(120)) });
        let h2 = tokio::spawn(async { std::thread::sleep(Duration::from_millis(120)) });
        std::thread::sleep(Duration::from_millis(120));
        h1.await.unwrap();
        h2.await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t2 = Instant::now();
        let busy = probe.max_between(t1, t2);
        assert!(
            busy >= Duration::from_millis(60),
            "blocked workers must show as lateness: idle {idle:?}, busy {busy:?}"
        );
        // A miss within that lateness is explained, a larger one is not.
        let small = TimingMiss::new(busy / 2, t1, t2);
        assert!(small.judge(&probe).1);
        let big = TimingMiss::new(busy + Duration::from_secs(5), t1, t2);
        assert!(!big.judge(&probe).1);
        let s = probe.summary(t1, t2);
        assert!(s.samples > 0 && s.max_ms >= s.p50_ms);
    }

    /// A process that competes for the CPUs with more busy threads than there are
    /// CPUs waits on the run queue, and that wait is measured.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_waiting_for_a_cpu_shows_as_run_queue_wait() {
        let Some(w) = RunQueueWait::start(std::process::id()) else {
            return; // no scheduler statistics here (not Linux)
        };
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let t0 = Instant::now();
        let spinners: Vec<_> = (0..cpus * 3)
            .map(|_| {
                std::thread::spawn(|| {
                    let end = Instant::now() + Duration::from_millis(200);
                    let mut x = 0u64;
                    while Instant::now() < end {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    x
                })
            })
            .collect();
        for s in spinners {
            let _ = s.join();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waited = w.between(t0, Instant::now());
        assert!(
            waited >= Duration::from_millis(50),
            "threads that outnumber the CPUs wait for them: {waited:?}"
        );
        assert_eq!(w.pid(), std::process::id());
    }

    /// The probe's threads competing with more busy threads than there are CPUs wait
    /// on the run queue, and that wait is measured; an idle interval shows (almost)
    /// none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_probes_threads_waiting_for_a_cpu_are_measured() {
        if this_thread_wait().is_none() {
            return; // no scheduler statistics here (not Linux)
        }
        let probe = Probe::start(Duration::from_millis(2));
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let idle = probe.threads_waited(t0, Instant::now());
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let t1 = Instant::now();
        let spinners: Vec<_> = (0..cpus * 4)
            .map(|_| {
                std::thread::spawn(|| {
                    let end = Instant::now() + Duration::from_millis(300);
                    let mut x = 0u64;
                    while Instant::now() < end {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    x
                })
            })
            .collect();
        // Keep the probe waking up while the spinners run (not a synchronization).
        tokio::time::sleep(Duration::from_millis(300)).await;
        for s in spinners {
            let _ = s.join();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let busy = probe.threads_waited(t1, Instant::now());
        assert!(
            busy >= Duration::from_millis(5) && busy > idle,
            "runtime threads that compete for the CPUs wait for them: idle {idle:?}, busy \
             {busy:?}"
        );
    }

    #[tokio::test]
    async fn an_interval_before_the_probe_started_has_no_lateness() {
        let before = Instant::now();
        let probe = Probe::start(Duration::from_millis(2));
        let (Some(a), Some(b)) = (
            before.checked_sub(Duration::from_secs(5)),
            before.checked_sub(Duration::from_secs(4)),
        ) else {
            return;
        };
        assert_eq!(probe.max_between(a, b), Duration::ZERO);
    }
}
