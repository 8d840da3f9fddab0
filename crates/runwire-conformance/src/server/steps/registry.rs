//! How a step is defined: one function whose typed arguments are parsed from the
//! captures of its pattern, registered once with that pattern (the way cucumber-rs
//! binds a `#[given(expr = "...")]` function, on this kit's own executor).
//!
//! ```text
//! r.step("the producer appends {n} events to run {s}", append);
//!
//! async fn append(w: &mut ServerWorld, n: u64, run: String) -> StepResultT { /* … */ }
//! ```
//!
//! An argument's type says which placeholders may capture it ([`Arg::FROM`]); the
//! suite's tests check every registration against its pattern, and that no pattern
//! hides a later one (the registry matches in registration order, first match wins).
//!
//! Not cucumber-rs's own runner (0.23): its `step::Collection::find` refuses a text
//! that two patterns match (`AmbiguousMatchError`) where this registry resolves it by
//! order, its step functions fail by panicking (a `Result` is unwrapped with
//! `panic!("{}", e)`), so a [`StepFail`]'s requirement, timing miss and not-implemented
//! grade would have to be smuggled through the panic payload, and its retries
//! (`RetryOptions`, fixed per scenario before it runs) rerun every failure, not only
//! the inconclusive ones, with a `World::new()` that cannot learn its attempt.

use std::future::Future;

use super::ServerWorld;
use crate::{
    pattern,
    runner::{BoxFut, StepFail, StepResultT},
};

/// What a step works on, which decides how the world reads its failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum On {
    /// The scenario's clients and runs (almost every step): an expired token the
    /// scenario needs is minted before it runs, and its failure is read in the light
    /// of a scenario client the server closed as a slow consumer
    /// ([`ServerWorld::unexpected_slow_close`]) and, after a flood step, of an
    /// `epoch_mismatch` reset (`crate::server::flood::blame_epoch_mismatch`).
    Scenario,
    /// Raw sockets of its own (the admission steps): its failure is read only in the
    /// light of an `epoch_mismatch` reset after a flood step.
    RawSockets,
    /// A client of its own (the flood step): its failure stands as it is.
    OwnClient,
}

/// The captures of a step's pattern, in order, and the step's doc string.
pub(in crate::server) struct Captures {
    values: std::vec::IntoIter<String>,
    doc: Option<String>,
}

impl Captures {
    fn next(&mut self) -> Result<String, StepFail> {
        self.values
            .next()
            .ok_or_else(|| StepFail::msg("step error: the pattern captured too few values"))
    }
}

/// A step argument, parsed from the next capture of the step's pattern.
pub(in crate::server) trait Arg: Sized + Send + 'static {
    /// The placeholders that may capture it; empty for an argument that is not a
    /// capture (the doc string).
    const FROM: &'static [&'static str];

    /// Takes the argument from `c`.
    fn take(c: &mut Captures) -> Result<Self, StepFail>;
}

/// The text of `{s}`, `{w}` or `{rest}`.
impl Arg for String {
    const FROM: &'static [&'static str] = &["s", "w", "rest"];

    fn take(c: &mut Captures) -> Result<Self, StepFail> {
        c.next()
    }
}

/// The number of `{n}`.
impl Arg for u64 {
    const FROM: &'static [&'static str] = &["n"];

    fn take(c: &mut Captures) -> Result<Self, StepFail> {
        let v = c.next()?;
        v.parse()
            .map_err(|_| StepFail::msg(format!("step error: {v:?} is not a number")))
    }
}

/// `true` or `false`, captured by `{w}`.
impl Arg for bool {
    const FROM: &'static [&'static str] = &["w"];

    fn take(c: &mut Captures) -> Result<Self, StepFail> {
        match c.next()?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(StepFail::msg(format!(
                "step error: {other:?} is neither true nor false"
            ))),
        }
    }
}

/// A comma-separated list in `{s}` (`"1.0, 2.0"`), each item trimmed.
impl Arg for Vec<String> {
    const FROM: &'static [&'static str] = &["s"];

    fn take(c: &mut Captures) -> Result<Self, StepFail> {
        Ok(c.next()?.split(',').map(|x| x.trim().to_owned()).collect())
    }
}

/// The step's doc string (empty when it has none).
pub(in crate::server) struct Doc(pub(in crate::server) String);

impl Arg for Doc {
    const FROM: &'static [&'static str] = &[];

    fn take(c: &mut Captures) -> Result<Self, StepFail> {
        Ok(Self(c.doc.take().unwrap_or_default()))
    }
}

/// The typed arguments of a step function, as a tuple.
pub(in crate::server) trait Params: Sized + Send + 'static {
    /// What may capture each argument ([`Arg::FROM`]), in order.
    fn from() -> Vec<&'static [&'static str]>;

    /// Parses the arguments.
    fn parse(c: &mut Captures) -> Result<Self, StepFail>;
}

/// A step function taking the world and the arguments `P`.
pub(in crate::server) trait Handler<'a, P>: Send + Sync + 'static {
    /// Runs the step.
    fn call(&self, w: &'a mut ServerWorld, p: P) -> BoxFut<'a, StepResultT>;
}

macro_rules! arity {
    ($($t:ident),*) => {
        impl<$($t: Arg),*> Params for ($($t,)*) {
            fn from() -> Vec<&'static [&'static str]> {
                vec![$($t::FROM),*]
            }

            #[allow(unused_variables)]
            fn parse(c: &mut Captures) -> Result<Self, StepFail> {
                Ok(($($t::take(c)?,)*))
            }
        }

        impl<'a, F, Fut, $($t),*> Handler<'a, ($($t,)*)> for F
        where
            F: Fn(&'a mut ServerWorld, $($t),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = StepResultT> + Send + 'a,
        {
            #[allow(non_snake_case)]
            fn call(&self, w: &'a mut ServerWorld, ($($t,)*): ($($t,)*)) -> BoxFut<'a, StepResultT> {
                Box::pin(self(w, $($t),*))
            }
        }
    };
}

arity!();
arity!(A);
arity!(A, B);
arity!(A, B, C);
arity!(A, B, C, D);
arity!(A, B, C, D, E);
arity!(A, B, C, D, E, G);

type Run =
    Box<dyn for<'a> Fn(&'a mut ServerWorld, Captures) -> BoxFut<'a, StepResultT> + Send + Sync>;

/// One registered step.
pub(in crate::server) struct Step {
    /// Its pattern ([`crate::pattern`]).
    pub(in crate::server) pattern: &'static str,
    /// What it works on.
    pub(in crate::server) on: On,
    /// What may capture each typed argument; `None` for a step that takes its
    /// captures as strings ([`Registry::untyped`]).
    #[cfg_attr(not(test), allow(dead_code, reason = "checked by the suite's tests"))]
    pub(super) params: Option<Vec<&'static [&'static str]>>,
    run: Run,
}

impl Step {
    /// Sets what the step works on (default [`On::Scenario`]).
    pub(in crate::server) fn on(&mut self, on: On) -> &mut Self {
        self.on = on;
        self
    }

    /// Runs the step with the captures of its pattern.
    pub(in crate::server) fn run<'a>(
        &self,
        w: &'a mut ServerWorld,
        values: Vec<String>,
        doc: Option<&str>,
    ) -> BoxFut<'a, StepResultT> {
        (self.run)(
            w,
            Captures {
                values: values.into_iter(),
                doc: doc.map(str::to_owned),
            },
        )
    }
}

/// Every step, in matching order.
#[derive(Default)]
pub(in crate::server) struct Registry {
    steps: Vec<Step>,
}

impl Registry {
    /// Registers `f` for `pattern`.
    pub(in crate::server) fn step<P, F>(&mut self, pattern: &'static str, f: F) -> &mut Step
    where
        P: Params,
        F: for<'a> Handler<'a, P>,
    {
        self.push(
            pattern,
            Some(P::from()),
            Box::new(move |w, mut c| match P::parse(&mut c) {
                Ok(p) => f.call(w, p),
                Err(e) => Box::pin(async move { Err(e) }),
            }),
        )
    }

    /// Registers `f` for `pattern`, given the captures as strings (for step kinds
    /// defined by a table of their own, `super::super::admission`).
    pub(in crate::server) fn untyped<F>(&mut self, pattern: &'static str, f: F) -> &mut Step
    where
        F: for<'a> Fn(&'a mut ServerWorld, Vec<String>) -> BoxFut<'a, StepResultT>
            + Send
            + Sync
            + 'static,
    {
        self.push(
            pattern,
            None,
            Box::new(move |w, c| f(w, c.values.collect())),
        )
    }

    fn push(
        &mut self,
        pattern: &'static str,
        params: Option<Vec<&'static [&'static str]>>,
        run: Run,
    ) -> &mut Step {
        self.steps.push(Step {
            pattern,
            on: On::Scenario,
            params,
            run,
        });
        let last = self.steps.len() - 1;
        &mut self.steps[last]
    }

    /// Every step, in matching order.
    pub(in crate::server) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The first step whose pattern matches `text`, with the captures.
    pub(in crate::server) fn find(&self, text: &str) -> Option<(&Step, Vec<String>)> {
        self.steps
            .iter()
            .find_map(|s| pattern::matches(s.pattern, text).map(|a| (s, a)))
    }
}
