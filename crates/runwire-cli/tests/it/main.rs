//! End-to-end tests of the `runwire` binary.

mod mock;
mod serve;
mod schema;
mod client;
mod conform;
