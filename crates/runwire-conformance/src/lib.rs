//! runwire-conformance (work in progress)
