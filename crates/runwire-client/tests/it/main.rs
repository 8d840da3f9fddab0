//! Integration tests of the reference client against in-process test servers.

mod backoff;
mod causes;
mod close_codes;
mod model;
mod server;
mod session;
mod units;
