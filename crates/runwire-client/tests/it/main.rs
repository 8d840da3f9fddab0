//! Integration tests of the reference client against in-process test servers.

mod backoff;
