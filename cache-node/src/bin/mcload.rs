//! `mcload`: a memcached load generator (text protocol), independent of the server code except for the shared
//! reply parser.
//!
//! Each of `--connections` connections runs a closed loop (one request in flight): with probability
//! `--get-ratio` a `get` of a uniformly chosen key, else a `set` of a `--value-size` value. Keys are
//! `--key-size` bytes from a fixed space of `--keys`. `--prepopulate` first stores every key. After
//! `--warmup-secs` it measures for `--duration-secs` and prints one line:
//! `ops=N ops_per_sec=X p50_us=A p99_us=B p999_us=C hits=H misses=M errors=E`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cache_node::protocol::{parse_response, Limits, ParsedResponse, Response};

/// memcached load generator: closed-loop get/set mix over many connections.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:11211")]
    addr: SocketAddr,
    /// Concurrent connections, one request in flight each.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Unmeasured seconds before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup_secs: f64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Key length in bytes.
    #[arg(long, default_value_t = 32)]
    key_size: usize,
    /// Value length in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Fraction of gets (the rest are sets).
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Store every key before the run.
    #[arg(long)]
    prepopulate: bool,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn key(i: usize, size: usize) -> Vec<u8> {
    let digits = format!("{i}");
    let mut k = b"key:".to_vec();
    k.resize(size.saturating_sub(digits.len()).max(4), b'0');
    k.extend_from_slice(digits.as_bytes());
    k
}

/// xorshift64*: cheap and good enough for choosing keys.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct ConnResult {
    hist: Histogram<u64>,
    ops: u64,
    hits: u64,
    misses: u64,
    errors: u64,
}

/// Reads one full reply: for a get, everything through END; for a set, one line.
async fn read_reply(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    limits: &Limits,
    is_get: bool,
) -> std::io::Result<(bool, bool)> {
    let mut hit = false;
    loop {
        loop {
            match parse_response(buf, limits) {
                ParsedResponse::Incomplete => break,
                ParsedResponse::Invalid => {
                    return Err(std::io::Error::other("invalid reply"));
                }
                ParsedResponse::Response { response, consumed } => {
                    let done = match response {
                        Response::Value { .. } => {
                            hit = true;
                            false
                        }
                        Response::End => true,
                        Response::Line(l) => {
                            if is_get || l != b"STORED" {
                                buf.advance(consumed);
                                return Ok((false, true));
                            }
                            true
                        }
                        _ => true,
                    };
                    buf.advance(consumed);
                    if done {
                        return Ok((hit, false));
                    }
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::Error::other("server closed the connection"));
        }
    }
}

async fn prepopulate(args: &Args) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(args.addr).await?;
    let value = vec![b'v'; args.value_size];
    let mut out = Vec::new();
    for i in 0..args.keys {
        out.extend_from_slice(b"set ");
        out.extend_from_slice(&key(i, args.key_size));
        out.extend_from_slice(format!(" 0 0 {} noreply\r\n", args.value_size).as_bytes());
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
        if out.len() > 256 * 1024 {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
    out.extend_from_slice(b"version\r\n");
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(1024);
    while !buf.ends_with(b"\r\n") {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed during prepopulate"));
        }
    }
    Ok(())
}

async fn run_connection(
    args: Arc<Args>,
    id: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<ConnResult> {
    let mut stream = TcpStream::connect(args.addr).await?;
    stream.set_nodelay(true)?;
    let limits = Limits {
        max_value_len: args.value_size.max(1 << 20),
        ..Limits::default()
    };
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (id as u64 + 1));
    let keys: Vec<Vec<u8>> = (0..args.keys).map(|i| key(i, args.key_size)).collect();
    let value = vec![b'x'; args.value_size];
    let set_tail = format!(" 0 0 {}\r\n", args.value_size);
    let get_threshold = (args.get_ratio * u64::MAX as f64) as u64;
    let mut out = Vec::with_capacity(args.value_size + 128);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut r = ConnResult {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ops: 0,
        hits: 0,
        misses: 0,
        errors: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        let k = &keys[(rng.next() % args.keys as u64) as usize];
        let is_get = rng.next() < get_threshold;
        out.clear();
        if is_get {
            out.extend_from_slice(b"get ");
            out.extend_from_slice(k);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"set ");
            out.extend_from_slice(k);
            out.extend_from_slice(set_tail.as_bytes());
            out.extend_from_slice(&value);
            out.extend_from_slice(b"\r\n");
        }
        let start = Instant::now();
        stream.write_all(&out).await?;
        let (hit, error) = read_reply(&mut stream, &mut buf, &limits, is_get).await?;
        let micros = start.elapsed().as_micros() as u64;
        if measuring.load(Ordering::Relaxed) {
            r.ops += 1;
            r.hist.saturating_record(micros.max(1));
            if error {
                r.errors += 1;
            } else if is_get && hit {
                r.hits += 1;
            } else if is_get {
                r.misses += 1;
            }
        }
    }
    Ok(r)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    if args.prepopulate {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(prepopulate(&args))?;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    // One single-threaded runtime per client thread, connections spread over them: no work stealing in the
    // client either, so it spends as little CPU per request as it can and disturbs the server least.
    let threads = args.threads.max(1);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let args = args.clone();
            let measuring = measuring.clone();
            let stop = stop.clone();
            std::thread::spawn(move || -> std::io::Result<Vec<ConnResult>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = (t..args.connections)
                        .step_by(threads)
                        .map(|id| {
                            tokio::spawn(run_connection(
                                args.clone(),
                                id,
                                measuring.clone(),
                                stop.clone(),
                            ))
                        })
                        .collect();
                    let mut results = Vec::with_capacity(tasks.len());
                    for task in tasks {
                        results.push(task.await.map_err(std::io::Error::other)??);
                    }
                    Ok(results)
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.warmup_secs));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.duration_secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ops, mut hits, mut misses, mut errors) = (0, 0, 0, 0);
    for h in handles {
        for r in h.join().map_err(|_| "client thread panicked")?? {
            hist.add(&r.hist)?;
            ops += r.ops;
            hits += r.hits;
            misses += r.misses;
            errors += r.errors;
        }
    }
    println!(
        "ops={ops} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} hits={hits} misses={misses} errors={errors}",
        ops as f64 / elapsed,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
    );
    Ok(())
}
