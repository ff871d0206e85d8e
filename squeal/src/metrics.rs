//! squeal's metrics and their Prometheus text endpoint.
//!
//! Counters are atomics updated on the hot path; the HTTP endpoint (`GET /metrics` or `GET /`; the
//! `metrics-endpoint` crate's, shared with cache-node) renders them as Prometheus text format 0.0.4. Nothing here ever holds configuration or
//! credentials, so the password cannot leak through it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

/// Upper bounds (seconds) of the commit→ack latency histogram buckets.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25,
    1.0, 5.0, 30.0,
];

/// All of squeal's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Binlog events read.
    pub events_read: AtomicU64,
    /// Row images read from ruled tables.
    pub rows_read: AtomicU64,
    /// Transactions whose records Kafka acknowledged (or that needed none).
    pub transactions_published: AtomicU64,
    /// Keys handed to Kafka.
    pub keys_published: AtomicU64,
    /// Records handed to Kafka.
    pub records_published: AtomicU64,
    /// Records handed to the producer and not yet acknowledged.
    pub records_in_flight: AtomicI64,
    /// Seconds between the newest processed event's timestamp and now (0 when caught up and idle).
    pub seconds_behind_source: AtomicI64,
    /// Checkpoint: numeric suffix of the binlog file.
    pub checkpoint_file_index: AtomicU64,
    /// Checkpoint: byte position.
    pub checkpoint_position: AtomicU64,
    /// Reconnects to the source.
    pub source_reconnects: AtomicU64,
    /// Keys written to transaction spill files.
    pub keys_spilled: AtomicU64,
    /// Prepared XA transactions whose keys wait for XA COMMIT (each holds the checkpoint back).
    pub xa_transactions_held: AtomicI64,
    /// commit-event-read → Kafka-ack latency of the transaction's last record.
    latency: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Fresh, zeroed metrics.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Records one commit→ack latency.
    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut h = self.latency.lock().expect("metrics lock");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "squeal_events_read_total",
            "Binlog events read.",
            self.events_read.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_rows_read_total",
            "Row images of ruled tables read.",
            self.rows_read.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_transactions_published_total",
            "Committed transactions fully acknowledged by Kafka.",
            self.transactions_published.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_keys_published_total",
            "Keys handed to Kafka.",
            self.keys_published.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_records_published_total",
            "Records handed to Kafka.",
            self.records_published.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_source_reconnects_total",
            "Reconnects to the source.",
            self.source_reconnects.load(Relaxed),
        );
        counter(
            &mut out,
            "squeal_keys_spilled_total",
            "Keys spilled to disk by large transactions.",
            self.keys_spilled.load(Relaxed),
        );
        gauge(
            &mut out,
            "squeal_xa_transactions_held",
            "Prepared XA transactions whose keys wait for XA COMMIT; the checkpoint stays before the oldest.",
            self.xa_transactions_held.load(Relaxed),
        );
        gauge(
            &mut out,
            "squeal_records_in_flight",
            "Records sent to Kafka and not yet acknowledged.",
            self.records_in_flight.load(Relaxed),
        );
        gauge(
            &mut out,
            "squeal_seconds_behind_source",
            "Now minus the timestamp of the newest processed binlog event.",
            self.seconds_behind_source.load(Relaxed),
        );
        gauge(
            &mut out,
            "squeal_checkpoint_file_index",
            "Numeric suffix of the checkpointed binlog file.",
            self.checkpoint_file_index.load(Relaxed) as i64,
        );
        gauge(
            &mut out,
            "squeal_checkpoint_position",
            "Byte position of the checkpoint in its binlog file.",
            self.checkpoint_position.load(Relaxed) as i64,
        );
        let h = self.latency.lock().expect("metrics lock");
        let name = "squeal_commit_to_ack_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From reading a transaction's commit event to Kafka acknowledging its last record.\n# TYPE {name} histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}", h.sum);
        let _ = writeln!(out, "{name}_count {}", h.count);
        out
    }
}

/// Most metrics requests served at once; a connection past it is closed at once. Each holds a
/// file descriptor for up to its 5 s deadline, and before session 31 a local client holding 600 idle
/// connections used up squeal's descriptors, so its checkpoint could not be written and it stopped.
pub const MAX_CONCURRENT_SCRAPES: usize = 16;

/// Serves `GET /metrics` on an already-bound listener until the task is dropped (the HTTP side is the
/// `metrics-endpoint` crate's, shared with cache-node).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    metrics_endpoint::Endpoint::new(move || metrics.render())
        .max_concurrent(MAX_CONCURRENT_SCRAPES)
        .serve(listener, std::future::pending::<()>())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn endpoint_serves_prometheus_text() {
        let m = Metrics::new();
        m.keys_published.fetch_add(3, Relaxed);
        m.observe_latency(Duration::from_micros(1500));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, m.clone()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        server.abort();
        assert!(text.starts_with("HTTP/1.1 200 OK"));
        assert!(text.contains("squeal_keys_published_total 3"), "{text}");
        assert!(
            text.contains("squeal_commit_to_ack_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("squeal_commit_to_ack_seconds_bucket{le=\"0.002\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("squeal_commit_to_ack_seconds_count 1"),
            "{text}"
        );
    }
}
