//! Regions: topology, consistent hashing, the cache-aside client, the invalidator and the router.
//!
//! Not built yet: this crate is a placeholder in the workspace until its issue is taken.
