//! Connections per authenticated identity (spec §17, `RW-SEC-9`, `RW-SEC-18`).
//!
//! An identity is a principal's name: a static token's `name`, a JWT's `sub`. Its
//! connections count from the `hello` that authenticated them to their close; the
//! `hello` that would exceed `max_connections_per_identity` is answered
//! `server_overloaded` (close 4104) with `retry_after_ms`, and the identity's other
//! connections are untouched. Without auth there is no identity to count (every
//! client is `anonymous`); the per-address limits of `crate::admission` apply.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Open connections per identity.
#[derive(Debug)]
pub(crate) struct Identities {
    max: usize,
    open: Mutex<BTreeMap<String, usize>>,
}

/// One connection's place in its identity's count; released when dropped.
#[derive(Debug)]
pub(crate) struct IdentitySlot {
    identities: Arc<Identities>,
    name: String,
}

impl Identities {
    /// At most `max` connections per identity (0: no limit).
    pub(crate) fn new(max: u32) -> Self {
        Self {
            max: usize::try_from(max).unwrap_or(usize::MAX),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a connection of `name`, or `None` when the identity holds its limit.
    pub(crate) fn enter(self: &Arc<Self>, name: &str) -> Option<IdentitySlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(name.to_owned()).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IdentitySlot {
            identities: Arc::clone(self),
            name: name.to_owned(),
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut open = self
            .identities
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_has_its_own_count_and_a_closed_connection_frees_its_place() {
        let ids = Arc::new(Identities::new(2));
        let a1 = ids.enter("alice").expect("first");
        let _a2 = ids.enter("alice").expect("second");
        assert!(ids.enter("alice").is_none(), "the third is over the limit");
        assert!(ids.enter("bob").is_some(), "another identity counts apart");
        drop(a1);
        assert!(
            ids.enter("alice").is_some(),
            "a closed connection frees its place"
        );
        let unlimited = Arc::new(Identities::new(0));
        let held: Vec<_> = (0..100).filter_map(|_| unlimited.enter("x")).collect();
        assert_eq!(held.len(), 100, "0 means no limit");
    }
}
