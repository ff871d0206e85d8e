//! cache-node: a memcached-compatible cache server with leases and a compact W-TinyLFU store.
//!
//! Modules: [`protocol`] (pure parsing and composing, shared with clients and the router), and the server
//! parts built on the store.

pub mod protocol;
