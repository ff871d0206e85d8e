//! The HTTP endpoint on which squeal and cache-node serve their Prometheus text.
//!
//! What it does: answers `GET /metrics` (and `GET /`, a query string ignored) with whatever text the
//! owner's render function gives at that moment (`HEAD`: its headers only; other methods 405), one
//! request per connection (`Connection: close`). It is bounded in every way a local client could push
//! on it: the request head to [`MAX_HEAD_BYTES`] (431 past it), each request to
//! a deadline, and the requests served at once to a cap, past which a new connection is closed
//! unanswered. A failed `accept` (out of descriptors, say) backs off instead of spinning a core.
//!
//! What it does not do: keep-alive, TLS, compression, content negotiation (always text format 0.0.4) or
//! any other route (404). It is meant for a Prometheus scraper on a trusted network, not as a web server.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let endpoint = metrics_endpoint::Endpoint::new(|| "up 1\n".to_string()).max_concurrent(8);
//! let server = tokio::spawn(endpoint.serve(listener, std::future::pending::<()>()));
//!
//! let mut scrape = tokio::net::TcpStream::connect(addr).await?;
//! scrape.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await?;
//! let mut response = String::new();
//! scrape.read_to_string(&mut response).await?;
//! assert!(response.starts_with("HTTP/1.1 200 OK"));
//! assert!(response.ends_with("\r\n\r\nup 1\n"));
//! server.abort();
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request head read (request line and headers). A scraper's head is a few hundred bytes; a
/// longer one gets 431 and the connection is closed, so a client cannot make the endpoint buffer more.
pub const MAX_HEAD_BYTES: usize = 8192;

/// Requests served at once unless [`Endpoint::max_concurrent`] says otherwise (node_exporter's
/// `--web.max-requests` is 40 by default).
pub fn default_max_concurrent() -> usize {
    40
}

/// Time a connection has to send its request and take the reply, unless
/// [`Endpoint::request_timeout`] says otherwise.
pub fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Pause after a failed `accept` before the next one: the usual cause (no descriptor left) lasts until
/// some connection closes, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A metrics endpoint: what to serve and how much of the process it may take.
pub struct Endpoint<R> {
    /// Gives the whole Prometheus text, called once per served request.
    render: Arc<R>,
    /// Requests served at once; a connection past them is closed at once. Connections that send
    /// nothing would otherwise hold a descriptor each for their deadline, as many as a client opens,
    /// and starve the owner (cache-node's client port, squeal's checkpoint file) of descriptors.
    max_concurrent: usize,
    /// Deadline for reading the request and writing the reply; a connection past it is closed.
    request_timeout: Duration,
}

impl<R> Endpoint<R>
where
    R: Fn() -> String + Send + Sync + 'static,
{
    /// An endpoint serving `render()`'s text, with the default cap and deadline.
    pub fn new(render: R) -> Self {
        Endpoint {
            render: Arc::new(render),
            max_concurrent: default_max_concurrent(),
            request_timeout: default_request_timeout(),
        }
    }

    /// Requests served at once (at least 1).
    pub fn max_concurrent(mut self, requests: usize) -> Self {
        self.max_concurrent = requests.max(1);
        self
    }

    /// Deadline for each connection's request and reply.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Serves on an already-bound `listener` until `shutdown` completes (requests in progress then
    /// finish on their own tasks, within their deadline).
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future) {
        tokio::pin!(shutdown);
        let slots = Arc::new(Semaphore::new(self.max_concurrent));
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(e) => {
                        tracing::debug!("metrics accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(socket);
                continue;
            };
            let render = self.render.clone();
            let deadline = self.request_timeout;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(deadline, respond(socket, &*render)).await;
                drop(slot);
            });
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET` of `/metrics` or `/`: the render.
    Metrics,
    /// `HEAD` of them: the render's headers only (what `curl -I` and uptime probes send).
    MetricsHead,
    /// Another method on them (405, with `Allow`).
    WrongMethod,
    /// Any other path (404).
    NotFound,
}

/// The route of a complete request head (request line first). The query string is ignored, as
/// Prometheus's exporters ignore parameters they do not know (`/metrics?name[]=...`).
fn route(head: &[u8]) -> Route {
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let path = target.split(|b| *b == b'?').next().unwrap_or(&[]);
    match (method, path) {
        (b"GET", b"/metrics" | b"/") => Route::Metrics,
        (b"HEAD", b"/metrics" | b"/") => Route::MetricsHead,
        (_, b"/metrics" | b"/") => Route::WrongMethod,
        _ => Route::NotFound,
    }
}

/// Reads one request head and answers it.
async fn respond(
    mut socket: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
) -> io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_HEAD_BYTES {
            socket
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return socket.shutdown().await;
        }
    }
    let route = route(&head);
    let (status, body) = match route {
        Route::Metrics | Route::MetricsHead => ("200 OK", render()),
        Route::WrongMethod => (
            "405 Method Not Allowed\r\nAllow: GET, HEAD",
            "use GET\n".to_string(),
        ),
        Route::NotFound => ("404 Not Found", "not found; try /metrics\n".to_string()),
    };
    // A HEAD answer has the GET answer's headers, Content-Length included, and no body.
    let sent_body = if matches!(route, Route::MetricsHead) {
        ""
    } else {
        &body
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sent_body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    fn start(
        endpoint: Endpoint<impl Fn() -> String + Send + Sync + 'static>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let listener = TcpListener::from_std(std_listener).unwrap();
        (
            addr,
            tokio::spawn(endpoint.serve(listener, std::future::pending::<()>())),
        )
    }

    /// Sends `request` (in pieces of `piece` bytes) and reads the whole response.
    async fn exchange(addr: SocketAddr, request: &[u8], piece: usize) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        for part in request.chunks(piece) {
            if s.write_all(part).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    #[tokio::test]
    async fn serves_the_render_at_metrics_and_root_head_and_query_and_404_elsewhere() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let (addr, server) = start(Endpoint::new(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            format!("scrapes {n}\n")
        }));
        let metrics = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 1).await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4\r\n"),
            "{metrics}"
        );
        assert!(
            metrics.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\nscrapes 1\n"),
            "{metrics}"
        );
        let root = exchange(addr, b"GET / HTTP/1.0\r\n\r\n", 64).await;
        assert!(root.ends_with("\r\n\r\nscrapes 2\n"), "{root}");
        let other = exchange(addr, b"GET /metricsx HTTP/1.1\r\n\r\n", 64).await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n", 64).await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\n"),
            "{post}"
        );
        // A query string is ignored (before session 34 it was a 404); HEAD gets the headers only.
        let query = exchange(addr, b"GET /metrics?name[]=up HTTP/1.1\r\n\r\n", 64).await;
        assert!(query.ends_with("\r\n\r\nscrapes 3\n"), "{query}");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n", 64).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("Content-Length: 10\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            4,
            "rendered only for the three scrapes and the HEAD"
        );
        server.abort();
    }

    #[tokio::test]
    async fn an_over_long_head_gets_431_and_nothing_is_rendered() {
        let (addr, server) = start(Endpoint::new(|| {
            panic!("not rendered for a refused request")
        }));
        // A head that has not ended by MAX_HEAD_BYTES + 1; no more is sent, so the server has read all
        // of it when it answers and its close sends no reset that could discard the answer.
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while request.len() <= MAX_HEAD_BYTES {
            request.extend_from_slice(
                b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let response = exchange(addr, &request, 1000).await;
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");
        server.abort();
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_at_its_deadline() {
        let (addr, server) =
            start(Endpoint::new(String::new).request_timeout(Duration::from_millis(200)));
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "closed unanswered at the deadline: {read:?}"
        );
        server.abort();
    }

    /// Idle connections hold at most `max_concurrent` slots: the next one is closed at once, unanswered,
    /// and once they go a scrape is served again. Without the cap the extra connection waits out its
    /// 5 s deadline, and the 2 s wait for the close fails.
    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_scrapes_resume() {
        let (addr, server) = start(Endpoint::new(|| "up 1\n".to_string()).max_concurrent(3));
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut over = TcpStream::connect(addr).await.unwrap();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), over.read_to_end(&mut reply)).await;
        assert!(
            matches!(read, Ok(Ok(0))),
            "the connection past the cap is closed unanswered: {read:?} {:?}",
            String::from_utf8_lossy(&reply)
        );
        drop(idle);
        // The slots come back as the server sees the idle connections close (a busy machine may take
        // a moment): a scrape is answered again within a few seconds.
        let mut response = String::new();
        for _ in 0..50 {
            response = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n", 64).await;
            if !response.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(response.ends_with("\r\n\r\nup 1\n"), "{response}");
        server.abort();
    }

    #[tokio::test]
    async fn shutdown_stops_the_accept_loop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Endpoint::new(String::new).serve(listener, stopped));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns once shutdown completes")
            .unwrap();
    }
}
