//! End-to-end tests of the `runwire` binary.

mod client;
mod conform;
mod docs;
mod logs;
mod mock;
mod schema;
mod serve;
mod watch;
