//! Runwire schema tooling: generation of the writer and reader JSON Schemas from the
//! Rust wire types, validation, and the compatibility rule engine (spec §18).
//!
//! - [`generate`]: the writer and reader contracts of every wire type.
//! - [`compat`] and [`rules`]: the rule engine that compares two schema trees in both
//!   directions, reading trees from directories, git refs or memory ([`tree`]).
//! - [`report`] and [`config`]: text, JSON and JUnit reports, with an ignore file.
//! - [`apidoc`]: the AsyncAPI 3.0 and OpenAPI 3.1 documents of the stream and the HTTP API.
//! - [`typescript`]: TypeScript declarations generated from the reader schemas.
//! - [`validate`]: fast validation of messages and events against the schemas.

pub mod apidoc;
pub mod compat;
pub mod config;
pub mod generate;
pub mod report;
pub mod rules;
pub mod tree;
pub mod typescript;
pub mod validate;
