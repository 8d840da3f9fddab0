//! The flood step (`features/server/flood.feature`), defined in `crate::server::flood`:
//! another client, on a connection of its own, subscribes to and unsubscribes from
//! many runs nobody appends to.

use std::sync::Arc;

use super::{On, Registry, ServerWorld};
use crate::{runner::StepResultT, server::flood::FLOOD};

pub(super) fn register(r: &mut Registry) {
    r.step(FLOOD, flood).on(On::OwnClient);
}

/// `another client subscribes to and unsubscribes from {n} runs nobody appends to`
async fn flood(w: &mut ServerWorld, n: u64) -> StepResultT {
    let target = Arc::clone(&w.target);
    crate::server::flood::flood(&target, w.scale, w.seed, w.rec.clone(), n).await
}
