//! The admission steps (`features/server/admission.feature`), defined by the table
//! of `crate::server::admission`: raw sockets of their own that never finish their
//! handshake.

use std::sync::Arc;

use super::{On, Registry};
use crate::server::admission::{STEPS, exec};

pub(super) fn register(r: &mut Registry) {
    for &(k, pattern) in STEPS {
        r.untyped(pattern, move |w, args| {
            Box::pin(async move {
                let target = Arc::clone(&w.target);
                exec(&target, &mut w.admission, w.scale, k, args).await
            })
        })
        .on(On::RawSockets);
    }
}
