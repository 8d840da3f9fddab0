//! Integration tests of the mock server: every fixture against a correct test client,
//! broken clients against the fixtures they must fail, transcripts, malformed fixtures.

mod broken;
mod client;
mod engine;
mod format;
mod harness;
mod library;
mod timing;
mod transcript;
