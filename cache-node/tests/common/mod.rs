//! Test harness: a cache-node on 127.0.0.1 port 0 with a ManualClock, a raw-bytes client, and a real
//! memcached to compare with.
#![allow(dead_code)]

pub mod diff;

use std::sync::Arc;
use std::time::Duration;

use cache_node::clock::ManualClock;
use cache_node::server::{self, Node, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Unix time the manual clock starts at.
pub const START_UNIX: u64 = 1_700_000_000;

/// `count` pipelined `set {prefix}{i} 0 0 LEN noreply` requests of `value`, as one write: a flood that
/// fills (or overfills) a budget without a reply to read.
pub fn noreply_sets(prefix: &str, count: usize, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (value.len() + prefix.len() + 32));
    for i in 0..count {
        out.extend_from_slice(
            format!("set {prefix}{i} 0 0 {} noreply\r\n", value.len()).as_bytes(),
        );
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `set {key} 0 0 {len}` with a value of `len` bytes of `v`: an item of a chosen size class.
pub fn set_request(key: &str, len: usize) -> Vec<u8> {
    let mut set = format!("set {key} 0 0 {len}\r\n").into_bytes();
    set.extend(std::iter::repeat_n(b'v', len));
    set.extend_from_slice(b"\r\n");
    set
}

/// The class ids `stats items` lists (`items:ID:number`), in order: what key-listing tools then ask
/// `stats cachedump` about.
pub fn item_class_ids(items: &[(String, String)]) -> Vec<u32> {
    items
        .iter()
        .filter_map(|(name, _)| {
            name.strip_prefix("items:")?
                .strip_suffix(":number")?
                .parse()
                .ok()
        })
        .collect()
}

/// A xorshift64 generator from `seed` (any value, 0 included): the request mixes of the concurrency
/// tests, which need variety between tasks, not statistical quality.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Calls `attempt` every 20 ms until it gives a value, for at most `within`; then fails with the reason
/// the last attempt gave. For tests that wait on another thread or process to reach a state: the wait
/// ends as soon as it is reached, and a busy machine gets the whole of `within`.
#[track_caller]
pub fn poll_for<T>(within: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `poll_for` for async tests: the attempt may await (a request over a client, a new connection), and
/// the wait sleeps on the runtime's timer rather than blocking its thread.
pub async fn poll_for_async<T>(
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// How often `poll_for` tries again: short beside the deadlines (5-40 s), long beside an attempt.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub node: Arc<Node>,
    pub clock: Arc<ManualClock>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let clock = Arc::new(ManualClock::new(START_UNIX));
        let mut config = ServerConfig {
            clock: clock.clone(),
            threads: 2,
            // The binary's model at `-t 2`: two connection threads that own their connections. Tests of
            // `--work-stealing` set 0 (connections on the test's own multi-threaded runtime).
            connection_threads: 2,
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let n = node.clone();
        let task = tokio::spawn(async move {
            server::run(listener, n, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            node,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Serves the node's metrics on a port of its own for one `GET /metrics` and returns the whole
    /// HTTP response, status line and headers included.
    pub async fn scrape_metrics(&self) -> std::io::Result<String> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let metrics = tokio::spawn(cache_node::metrics::serve(
            listener,
            self.node.clone(),
            std::future::pending::<()>(),
        ));
        let mut http = TcpStream::connect(addr).await?;
        http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut response = String::new();
        http.read_to_string(&mut response).await?;
        metrics.abort();
        Ok(response)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads exactly `n` bytes (after any already buffered).
    pub async fn read_n(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = vec![0u8; 64 * 1024];
            let r = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {n} bytes, have {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                })
                .unwrap();
            assert!(
                r > 0,
                "connection closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..r]);
        }
        self.buf.drain(..n).collect()
    }

    /// Returns whatever is buffered, or waits for the next chunk from the socket.
    pub async fn read_some(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            let mut chunk = vec![0u8; 64 * 1024];
            let r = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a reply")
                .unwrap();
            assert!(r > 0, "connection closed");
            return chunk[..r].to_vec();
        }
        std::mem::take(&mut self.buf)
    }

    /// Reads one line (without `\r\n`).
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l: Vec<u8> = self.buf.drain(..p + 2).collect();
                return String::from_utf8_lossy(&l[..p]).into_owned();
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let r = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("timed out waiting for a line")
                .unwrap();
            assert!(r > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..r]);
        }
    }

    /// Sends `req` and asserts the reply is exactly `want` (and that nothing else arrives with it).
    pub async fn expect(&mut self, req: &[u8], want: &[u8]) {
        self.send(req).await;
        self.expect_reply(want).await;
    }

    pub async fn expect_reply(&mut self, want: &[u8]) {
        let got = self.read_n(want.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "request reply mismatch"
        );
    }

    /// Sends mcrouter's `lease-get KEY` for a key with no value and returns the token of its
    /// `LVALUE KEY TOKEN 0 0` reply (1: another client holds the lease), asserting the reply's shape:
    /// no flags, an empty value, `END`.
    pub async fn lease_get_miss(&mut self, key: &str) -> u64 {
        self.lease_get_lvalue(key, b"").await
    }

    /// Sends mcrouter's `lease-get KEY` where the reply is an `LVALUE` (a miss, or a stale item
    /// after `md KEY I`) carrying `value` with no flags, and returns its token (1: another client
    /// holds the lease), asserting the reply's shape: `LVALUE KEY TOKEN 0 LEN`, `value`, `END`.
    pub async fn lease_get_lvalue(&mut self, key: &str, value: &[u8]) -> u64 {
        self.send(format!("lease-get {key}\r\n").as_bytes()).await;
        let l = self.line().await;
        let token = l
            .strip_prefix(&format!("LVALUE {key} "))
            .and_then(|rest| rest.strip_suffix(&format!(" 0 {}", value.len())))
            .and_then(|token| token.parse().ok())
            .unwrap_or_else(|| {
                let value = String::from_utf8_lossy(value);
                panic!("not a lease-get LVALUE of {key} with {value:?}: {l}")
            });
        let mut rest = value.to_vec();
        rest.extend_from_slice(b"\r\nEND\r\n");
        self.expect_reply(&rest).await;
        token
    }

    /// Asserts no further bytes arrive within a short time (for noreply / quiet requests).
    pub async fn expect_silence(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut chunk = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), self.stream.read(&mut chunk)).await {
            Err(_) => {}
            Ok(Ok(n)) => panic!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Ok(Err(e)) => panic!("read error {e}"),
        }
    }

    /// Asserts that nothing is left to arrive from the requests sent so far: sends `mn` and expects
    /// exactly `MN` as the next bytes, with nothing after it. The server answers in order, so a stray
    /// reply (to a noreply request, or a second line after an expected one) comes before the `MN` and
    /// fails the comparison, however late it is written; unlike [`Client::expect_silence`] this does not
    /// depend on a timeout.
    pub async fn expect_nothing_more(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected {:?} before mn",
            String::from_utf8_lossy(&self.buf)
        );
        self.expect(b"mn\r\n", b"MN\r\n").await;
        assert!(
            self.buf.is_empty(),
            "unexpected {:?} after MN",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// True if the server closed the connection.
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        matches!(
            tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Sends `stats` (`group` empty) or `stats GROUP` and returns its `STAT name value` lines, in order,
    /// up to `END`; any other line fails the test.
    pub async fn stats(&mut self, group: &str) -> Vec<(String, String)> {
        let request = if group.is_empty() {
            "stats\r\n".to_string()
        } else {
            format!("stats {group}\r\n")
        };
        self.send(request.as_bytes()).await;
        let mut stats = Vec::new();
        loop {
            let l = self.line().await;
            if l == "END" {
                return stats;
            }
            let (name, value) = l
                .strip_prefix("STAT ")
                .and_then(|rest| rest.split_once(' '))
                .unwrap_or_else(|| panic!("not a STAT line: {l}"));
            stats.push((name.to_string(), value.to_string()));
        }
    }

    /// Sends `stats` and returns the value of one stat.
    pub async fn stat(&mut self, name: &str) -> String {
        self.stats("")
            .await
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no stat {name}"))
    }
}

/// A real memcached (Debian's 1.6.18, or `$MEMCACHED`) on a free loopback port, killed on drop: the reference
/// that tests compare cache-node with.
pub struct Memcached {
    child: std::process::Child,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        let bin = std::env::var("MEMCACHED").unwrap_or_else(|_| "/usr/bin/memcached".to_string());
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} not found: the comparison needs memcached 1.6; run scripts/setup \
             (or set MEMCACHED to a memcached binary)"
        );
        // The port is free when picked but not held, so another test's server may take it first; the
        // memcached answering must be this one (its `stats` pid), or it is started again on another.
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port();
            let port_arg = port.to_string();
            let mut args = vec![
                "-p",
                &port_arg,
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-t",
                "1",
                "-m",
                "64",
            ];
            // memcached refuses to run as root unless told which user to be.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                args.extend(["-u", "root"]);
            }
            let child = std::process::Command::new(&bin)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin}: {e}; run scripts/setup"));
            let mut mc = Memcached { child, port };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let pid = loop {
                if let Some(pid) = listening_pid(port) {
                    break pid;
                }
                if let Ok(Some(status)) = mc.child.try_wait() {
                    panic!("{bin} exited at start-up ({status})");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{bin} did not start listening"
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            if pid == mc.child.id() {
                return mc;
            }
            // Dropping `mc` kills this child, which could not listen.
        }
        panic!("no free port for {bin} in 5 attempts");
    }
}

/// The pid of the memcached-protocol server listening on `port`, from its `stats`; None if nothing
/// answers there yet.
fn listening_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"stats\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while !reply.ends_with(b"END\r\n") {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&reply)
        .lines()
        .find_map(|l| l.strip_prefix("STAT pid ")?.trim().parse().ok())
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
