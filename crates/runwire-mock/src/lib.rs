//! runwire-mock (work in progress)
