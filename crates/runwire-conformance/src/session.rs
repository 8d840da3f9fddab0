//! One conformance run from targets to report, as `runwire conform` does it: the
//! preflight that turns an unreachable target or an adapter that cannot start into
//! one line instead of a hundred violations, the calibration of the time scales on
//! this machine, the reference server of the default mode, then the suites.

#[cfg(feature = "reference")]
use crate::reference::{ReferenceServer, reference_config};
use std::time::Duration;

use crate::{
    ConformOptions, Plan,
    client::ClientTarget,
    conform,
    model::{Calibration, Error, RunReport, ScenarioResult},
    preflight::{self, PreflightError},
    server::ServerTarget,
};

/// How the time scales of a run are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleChoice {
    /// From the timer lateness measured on this machine and the adapter's start-up
    /// ([`preflight::choose_scales`]).
    Auto,
    /// This scale for the server suite, and for the client suite unless it has its own.
    Fixed(f64),
}

impl std::str::FromStr for ScaleChoice {
    type Err = String;

    /// `auto`, or a positive number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        match s.parse::<f64>() {
            Ok(x) if x > 0.0 && x.is_finite() => Ok(Self::Fixed(x)),
            _ => Err(format!("{s:?} is not a positive number or `auto`")),
        }
    }
}

/// What one run tests, and how its time scales are chosen.
#[derive(Debug, Clone)]
pub struct Session {
    /// The server under test.
    pub server: Option<ServerTarget>,
    /// The client under test.
    pub client: Option<ClientTarget>,
    /// Start the reference server in process for the run and test it (the default
    /// mode), in place of `server`.
    pub reference_server: bool,
    /// The targets are the bundled reference implementations: a fixed scale applies
    /// to the client suite doubled (the reference adapter is a separate process whose
    /// timing includes process scheduling).
    pub bundled: bool,
    /// How the scales are chosen.
    pub scale: ScaleChoice,
    /// The client suite's scale, when given apart.
    pub client_time_scale: Option<f64>,
}

/// How a run ended.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per run, moved once
pub enum Outcome {
    /// The suites ran.
    Report(RunReport),
    /// A target failed the preflight: no scenario was judged.
    NotRun(PreflightError),
}

impl Session {
    /// Runs the preflight, calibrates, and runs the suites with `opts` (whose scales
    /// and probe the calibration sets). `calibrated` sees the calibration before the
    /// first scenario; `progress` sees every result.
    pub async fn run(
        self,
        mut opts: ConformOptions,
        calibrated: &(dyn Fn(&Calibration) + Sync),
        progress: &(dyn Fn(&ScenarioResult) + Sync),
    ) -> Result<Outcome, Error> {
        let probe = runwire_mock::Probe::start_default();
        opts.probe = Some(probe.clone());
        if let Some(t) = &self.server
            && let Err(e) = preflight::check_server(t, Duration::from_secs(5)).await
        {
            return Ok(Outcome::NotRun(e));
        }
        let startup = match &self.client {
            Some(t) => match preflight::adapter_startup(t, Duration::from_secs(30)).await {
                Ok(d) => Some(d),
                Err(e) => return Ok(Outcome::NotRun(e)),
            },
            None => None,
        };
        // Calibration: how late this machine runs timers right now.
        let lateness = preflight::timer_lateness(&probe, Duration::from_millis(300)).await;
        let (time_scale, client_time_scale, auto, reason) = match self.scale {
            ScaleChoice::Auto => {
                let (s, c, why) = preflight::choose_scales(&lateness, startup);
                (s, self.client_time_scale.unwrap_or(c), true, why)
            }
            ScaleChoice::Fixed(x) => {
                let c = self
                    .client_time_scale
                    .unwrap_or(if self.bundled { x * 2.0 } else { x });
                (x, c, false, "--time-scale".to_owned())
            }
        };
        opts.time_scale = time_scale;
        opts.client_time_scale = Some(client_time_scale);
        let cal = preflight::calibration(
            lateness,
            startup,
            auto,
            time_scale,
            client_time_scale,
            reason,
        );
        calibrated(&cal);
        opts.calibration = Some(cal);
        #[cfg(feature = "reference")]
        let reference = if self.reference_server {
            Some(ReferenceServer::start(reference_config(time_scale)).await?)
        } else {
            None
        };
        #[cfg(not(feature = "reference"))]
        if self.reference_server {
            return Err(crate::Error::Target(
                "this build of the kit has no reference server (the `reference` feature of runwire-conformance is off); give a server URL".into(),
            ));
        }
        #[cfg(feature = "reference")]
        let server = reference
            .as_ref()
            .map(ReferenceServer::target)
            .or(self.server);
        #[cfg(not(feature = "reference"))]
        let server = self.server;
        let plan = Plan {
            server,
            client: self.client,
        };
        let report = conform(plan, &opts, progress).await;
        #[cfg(feature = "reference")]
        if let Some(s) = reference {
            s.stop().await;
        }
        Ok(Outcome::Report(report?))
    }
}
