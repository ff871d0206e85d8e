//! cache-node: a memcached-compatible cache server with leases and a compact W-TinyLFU store.
//!
//! Modules: [`protocol`] (pure parsing and composing, shared with clients and the router), [`store`]
//! (the W-TinyLFU store), [`clock`] (injectable time), [`replay`] (trace replay), and the server parts
//! built on them ([`server`], [`listen`] (the `-l` addresses), [`commands`], [`maintainer`], [`stats`],
//! [`metrics`]).
pub mod clock;
pub mod commands;
pub mod listen;
pub mod maintainer;
pub mod metrics;
pub mod protocol;
pub mod replay;
pub mod server;
pub mod stats;
pub mod store;
