//! Integration tests of the reference server, one module per spec area. Every test
//! talks to a real server over loopback (port 0) with a real WebSocket client; test
//! names carry the requirement IDs they prove.

mod admission;
mod auth;
mod batch;
mod common;
mod conn;
mod disk;
mod frames;
mod ingest;
mod input;
mod linger;
mod observability;
mod origin;
mod page;
mod redis;
mod redis_cluster;
mod retention;
mod shutdown;
mod slow;
mod store;
mod store_contract;
mod sub;
mod tls;
