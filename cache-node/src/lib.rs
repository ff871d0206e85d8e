//! cache-node: a memcached-compatible cache server with leases and a compact W-TinyLFU store.
pub mod clock;
pub mod replay;
pub mod store;
