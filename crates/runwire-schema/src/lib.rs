//! Runwire schema tooling: generation of the writer and reader JSON Schemas from the
//! Rust wire types, validation, and the compatibility rule engine (spec §18).
//!
//! - [`generate`]: the writer and reader contracts of every wire type.
//! - [`compat`] and [`rules`]: the rule engine that compares two schema trees in both
//!   directions, reading trees from directories, git refs or memory ([`tree`]).
//! - [`report`] and [`config`]: text, JSON and JUnit reports, with an ignore file.
//! - [`validate`]: fast validation of messages and events against the schemas.

pub mod compat;
pub mod config;
pub mod generate;
pub mod report;
pub mod rules;
pub mod tree;
pub mod validate;
