//! Integration tests of the conformance kit: the reference server passes the server
//! suite, every broken server variant is caught with the right requirement, and the
//! reports are well-formed.

mod coverage;
mod reports;
mod server_suite;
mod server_variants;
