//! runwire-client (work in progress)
