//! squeal: tails a MySQL/MariaDB binlog, maps committed row changes to cache keys and publishes them
//! to Kafka as invalidation records, checkpointing only what Kafka acknowledged.
//!
//! Pipeline: [`source`] (binlog stream, reconnects) → [`events`] (raw MariaDB/MySQL event decoding,
//! embedded keys, DDL) → [`txn`] (per-transaction key buffer, bounded memory) → [`publish`] (Kafka,
//! back-pressure, ack tracking) → [`checkpoint`] (atomic position file). [`rules`] and [`render`]
//! turn rows into keys; [`check`] verifies a server; [`metrics`] serves Prometheus text.
//! [`progress`] keeps the resume point (position, MariaDB GTID state, MySQL [`gtid_set`]) and the
//! prepared XA transactions whose keys wait for their XA COMMIT.
//! It does not consume invalidations: that is the `regions` crate.

pub mod check;
pub mod checkpoint;
pub mod config;
pub mod events;
pub mod gtid_set;
pub mod metrics;
pub mod progress;
pub mod publish;
pub mod render;
pub mod rules;
pub mod source;
pub mod txn;
pub mod wire;
