//! The `cache-node` binary: a memcached-compatible cache server, started like memcached, plus the
//! `replay` subcommand that measures the store's hit rate on a key trace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use cache_node::clock::SystemClock;
use cache_node::maintainer;
use cache_node::protocol::Limits;
use cache_node::server::{self, Node, ServerConfig};

/// A memcached-compatible cache server with leases and a W-TinyLFU store.
///
/// Speaks the memcached text protocol, the meta protocol (mg/ms/md/ma/mn) and mcrouter's lease-get/lease-set.
#[derive(Parser, Debug)]
#[command(name = "cache-node", version, about, long_about = None)]
struct Cli {
    /// TCP port to listen on (memcached -p).
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    port: u16,
    /// Address to listen on (memcached -l). Loopback by default; set 0.0.0.0 to serve other hosts.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    listen: String,
    /// Memory budget for items in megabytes (memcached -m); the store evicts to stay within it.
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    memory_mb: usize,
    /// Most simultaneous connections (memcached -c); extra ones get "ERROR Too many open connections".
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    max_connections: usize,
    /// Largest item value (memcached -I), with an optional k or m suffix, e.g. 512k, 1m, 4m.
    #[arg(short = 'I', long = "max-item-size", default_value = "1m", value_parser = parse_size)]
    max_item_size: usize,
    /// Worker threads serving connections (memcached -t).
    #[arg(short = 't', long = "threads", default_value_t = 4)]
    threads: usize,
    /// Port for Prometheus metrics over HTTP (GET /metrics) on the listen address; 0 = off.
    #[arg(long = "metrics-port", default_value_t = 0)]
    metrics_port: u16,
    /// Seconds a lease lasts when the client gives none (lease-get, mg N0): after it the next miss may lease.
    #[arg(long = "lease-window-secs", default_value_t = 10)]
    lease_window_secs: u32,
    /// Store shards (independent locks); more shards, less contention.
    #[arg(long = "shards", default_value_t = 64)]
    shards: usize,
    /// Microseconds the maintainer thread (background expiry) sleeps between wake-ups while requests
    /// arrive; idle, it backs off to once a second. Its wake-ups also let the kernel reschedule when clients
    /// share the server's cores (see SERVER.md); 100 to 1000000 (memcached's maintainer: 1000 to 1000000).
    #[arg(long = "maintainer-sleep-us",
          default_value_t = micros(maintainer::default_busy_sleep()),
          value_parser = clap::value_parser!(u64).range(micros(maintainer::MIN_SLEEP)..=1_000_000))]
    maintainer_sleep_us: u64,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay a key trace through the real store and print the hit rate (a get, then a set on a miss).
    Replay {
        /// Trace file: .gz (text, one key per line) or .xz (big-endian u32 keys; u64 if the name says u64).
        #[arg(long)]
        trace: PathBuf,
        /// Store capacity in items.
        #[arg(long)]
        capacity: usize,
    },
}

/// Whole microseconds of `d`, for flags given in microseconds.
fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k') => (&s[..s.len() - 1], 1024),
        Some(b'm') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (&s[..], 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (examples: 1048576, 512k, 1m)"))?;
    let size = n.checked_mul(mult).ok_or("size too large")?;
    if !(1024..=1024 * 1024 * 1024).contains(&size) {
        return Err("item size must be between 1k and 1024m".into());
    }
    Ok(size)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if let Some(Command::Replay { trace, capacity }) = &cli.command {
        let report = cache_node::replay::run_replay(trace, *capacity)?;
        println!("hit_rate={:.2}", report.hit_rate_percent());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = cli.threads.max(1);
    let config = ServerConfig {
        limits: Limits {
            max_value_len: cli.max_item_size,
            ..Limits::default()
        },
        max_connections: cli.max_connections,
        lease_window_secs: cli.lease_window_secs.max(1),
        memory_limit_bytes: cli.memory_mb.max(1) << 20,
        store_shards: cli.shards.max(1),
        threads,
        port: cli.port,
        clock: Arc::new(SystemClock::new()),
        maintainer_busy_sleep: std::time::Duration::from_micros(cli.maintainer_sleep_us),
        // Connections run on this runtime's workers, not on per-thread runtimes (see SERVER.md).
        connection_threads: 0,
        ..ServerConfig::default()
    };
    // `-t` workers serve the connections, the expiry task and metrics; a ready connection is served by
    // whichever worker runs, so a worker the kernel has descheduled does not hold up its connections.
    // The main thread only accepts (the accept loop runs inside block_on).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("cache-node-worker")
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", cli.listen, cli.port)
            .parse()
            .map_err(|e| format!("bad listen address {}:{}: {e}", cli.listen, cli.port))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let node = Node::new(config);
        tracing::info!("cache-node listening on {}", listener.local_addr()?);
        if cli.metrics_port != 0 {
            let maddr: SocketAddr = format!("{}:{}", cli.listen, cli.metrics_port).parse()?;
            let mlistener = tokio::net::TcpListener::bind(maddr).await?;
            tracing::info!("metrics on http://{}/metrics", mlistener.local_addr()?);
            tokio::spawn(cache_node::metrics::serve(
                mlistener,
                node.clone(),
                std::future::pending::<()>(),
            ));
        }
        server::run(listener, node, shutdown_signal()).await?;
        tracing::info!("cache-node stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
