//! Integration tests of runwire-protocol: example payloads, round trips, decoder robustness.

mod frames;
mod never_panics;
mod payloads;
mod roundtrip;
