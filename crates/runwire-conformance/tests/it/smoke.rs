//! The suites against the reference server.
