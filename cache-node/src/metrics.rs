//! Prometheus text exposition of the node's stats on a small HTTP/1.1 endpoint.
//!
//! The same figures as `stats` (memcached names prefixed `cache_node_`), served at `GET /metrics`. The
//! HTTP side (one request per connection, the head bounded to 8 KiB, 5 seconds per request,
//! [`MAX_CONCURRENT_SCRAPES`] at once) is the `metrics-endpoint` crate's, shared with squeal; this module
//! only renders the text.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::server::Node;

/// Requests served at once; a connection beyond them is closed at once. Connections that send nothing
/// could otherwise hold a file descriptor each for their 5 seconds, as many as a flood opens, and starve
/// the cache port's accept of descriptors. (node_exporter caps its scrapes the same way,
/// `--web.max-requests`, default 40.)
pub const MAX_CONCURRENT_SCRAPES: usize = 40;

/// Names that are gauges; every other numeric stat is a counter.
const GAUGES: &[&str] = &[
    "pid",
    "uptime",
    "time",
    "pointer_size",
    "curr_connections",
    "max_connections",
    "limit_maxbytes",
    "threads",
    "bytes",
    "reserved_bytes",
    "curr_items",
    "window_items",
    "probation_items",
    "protected_items",
    "maintainer_tick_us",
];

/// Renders the node's stats as Prometheus text.
pub fn render(node: &Node) -> String {
    let mut out = String::with_capacity(4096);
    for (name, value) in node.stats_lines() {
        if name == "version" {
            out.push_str("# TYPE cache_node_info gauge\n");
            out.push_str(&format!("cache_node_info{{version=\"{value}\"}} 1\n"));
            continue;
        }
        if let Some(mode) = name.strip_prefix("rusage_") {
            if let Ok(seconds) = value.parse::<f64>() {
                out.push_str(&format!(
                    "# TYPE cache_node_cpu_{mode}_seconds_total counter\ncache_node_cpu_{mode}_seconds_total {seconds}\n"
                ));
            }
            continue;
        }
        let Ok(v) = value.parse::<u64>() else {
            continue;
        };
        if GAUGES.contains(&name) {
            out.push_str(&format!(
                "# TYPE cache_node_{name} gauge\ncache_node_{name} {v}\n"
            ));
        } else {
            out.push_str(&format!(
                "# TYPE cache_node_{name}_total counter\ncache_node_{name}_total {v}\n"
            ));
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, node: Arc<Node>, shutdown: impl Future) {
    metrics_endpoint::Endpoint::new(move || render(&node))
        .max_concurrent(MAX_CONCURRENT_SCRAPES)
        .serve(listener, shutdown)
        .await
}
