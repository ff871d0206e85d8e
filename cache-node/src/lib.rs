//! cache-node: a memcached-compatible cache server with leases and a compact W-TinyLFU store.
