//! runwire-server (work in progress)
