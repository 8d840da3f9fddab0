//! A timer that may be unset, for `select!` loops: instead of a placeholder deadline
//! far in the future, an unset [`Deadline`] never fires.

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// A deadline that is either set to an instant or unset.
#[derive(Debug)]
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    set: bool,
}

impl Deadline {
    /// An unset deadline.
    pub(crate) fn unset() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            set: false,
        }
    }

    /// Sets the deadline to `at`.
    pub(crate) fn set(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.set = true;
    }

    /// Unsets the deadline.
    pub(crate) fn clear(&mut self) {
        self.set = false;
    }

    /// Whether the deadline is set.
    pub(crate) fn is_set(&self) -> bool {
        self.set
    }

    /// Resolves once the deadline has passed (at once if it passed before, until it
    /// is set again or cleared); never while it is unset.
    pub(crate) async fn passed(&mut self) {
        if self.set {
            self.sleep.as_mut().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_unset_deadline_never_passes_and_a_set_one_does() {
        let mut d = Deadline::unset();
        assert!(!d.is_set());
        let waited = tokio::time::timeout(Duration::from_millis(30), d.passed()).await;
        assert!(waited.is_err(), "an unset deadline passed");
        d.set(Instant::now() + Duration::from_millis(10));
        assert!(d.is_set());
        tokio::time::timeout(Duration::from_secs(10), d.passed())
            .await
            .expect("a set deadline passes");
        d.clear();
        let waited = tokio::time::timeout(Duration::from_millis(30), d.passed()).await;
        assert!(waited.is_err(), "a cleared deadline passed");
    }
}
