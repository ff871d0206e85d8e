//! Prometheus text exposition of the node's stats on a small HTTP/1.1 endpoint.
//!
//! The same figures as `stats` (memcached names prefixed `cache_node_`), served at `GET /metrics`. It is a
//! tiny responder over tokio, one request per connection (`Connection: close`), with the request head bounded
//! to 8 KiB, 5 seconds per request and [`MAX_CONCURRENT_SCRAPES`] at once; it is meant for a Prometheus
//! scraper on a trusted network, not as a general web server.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    shutdown: impl Future,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SCRAPES));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(socket);
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), respond(socket, &node)).await;
                    drop(slot);
                });
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}

async fn respond(mut socket: TcpStream, node: &Node) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > 8192 {
            socket
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let (status, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ") {
        ("200 OK", render(node))
    } else {
        ("404 Not Found", "not found; try /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}
