//! `mcload`: a memcached load generator (text protocol), independent of the server code except for the shared
//! reply parser.
//!
//! Each of `--connections` connections keeps one request in flight: with probability `--get-ratio` a `get`
//! of a uniformly chosen key, else a `set` of a `--value-size` value. Keys are `--key-size` bytes from a
//! fixed space of `--keys`. `--prepopulate` first stores every key. After `--warmup-secs` it measures for
//! `--duration-secs` and prints one line:
//! `ops=N ops_per_sec=X p50_us=A p99_us=B p999_us=C hits=H misses=M errors=E conn_ops_min=.. conn_ops_max=..
//! client_cpu_us_per_op=.. slow_pct=..`.
//!
//! `--read-through` turns every request into a cache-aside access: a `get`, and on a miss a `set` of
//! the key's value on the same connection, awaited, both timed as one request. With `--sizes MIN:MAX`
//! each key's value has a size of its own, log-uniform in MIN..=MAX (fixed per key, the same in every
//! run), instead of `--value-size`: with more keys than fit, the server keeps turning memory over
//! between size classes.
//!
//! Two modes:
//! - closed loop (`--rate 0`, the default): each connection sends its next request as soon as the reply
//!   arrives, so the offered load is whatever the server sustains (saturation); latency is measured from
//!   the send.
//! - open loop at a fixed rate (`--rate R`): the connections together send R requests per second, evenly
//!   spaced (connection i sends at `start + i/R + k*connections/R`). Latency is measured from the
//!   *intended* send time, so a reply that comes late also charges the delay it causes to the requests
//!   queued behind it (coordinated omission corrected, as wrk2 does). Send times are kept with a
//!   `timerfd` per connection (tokio's timer has millisecond resolution, too coarse for sub-millisecond
//!   latencies), and the client threads ask for 1 ns timer slack.
//!
//! `conn_ops_min`/`conn_ops_max` show whether some connection was starved (with `MCLOAD_PER_CONN=1` in the
//! environment every connection's count goes to stderr, in connection order); `client_cpu_us_per_op` is
//! this process's CPU time per measured request, to check the load generator is not the bottleneck;
//! `slow_pct` is the share of requests (percent) that took at least `--slow-us`, by default about one
//! 250 Hz kernel tick: the requests that waited for the scheduler, which is what sets p99 at saturation
//! on a machine whose client and server share the cores (cache-node/SERVER.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cache_node::protocol::{parse_response, Keys, Limits, ParsedResponse, Request, Response};

/// memcached load generator: get/set mix over many connections, closed loop or at a fixed rate.
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
    /// Every request a `get`, followed on a miss by a `set` of the key (cache-aside).
    #[arg(long)]
    read_through: bool,
    /// Value sizes per key, log-uniform in MIN..=MAX bytes (`MIN:MAX`), instead of `--value-size`.
    #[arg(long, value_parser = parse_sizes)]
    sizes: Option<(usize, usize)>,
    /// Requests per second over all connections (open loop, latency from the intended send time);
    /// 0 = closed loop (each connection sends as soon as its reply arrives).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Latency in microseconds at and above which a request counts in `slow_pct` (default: a little under
    /// one 4 ms tick of a 250 Hz kernel).
    #[arg(long, default_value_t = 3_900)]
    slow_us: u64,
}

/// `MIN:MAX` with 1 <= MIN <= MAX.
fn parse_sizes(s: &str) -> Result<(usize, usize), String> {
    let (min, max) = s.split_once(':').ok_or("expected MIN:MAX")?;
    let (min, max) = (
        min.parse::<usize>().map_err(|e| e.to_string())?,
        max.parse::<usize>().map_err(|e| e.to_string())?,
    );
    if min == 0 || min > max {
        return Err(format!("need 1 <= MIN <= MAX, got {min}:{max}"));
    }
    Ok((min, max))
}

/// Value size of key `i`: `--value-size`, or with `--sizes MIN:MAX` log-uniform in MIN..=MAX from a
/// hash of `i` (so every connection and every run gives a key the same size).
fn value_size(args: &Args, i: usize) -> usize {
    match args.sizes {
        None => args.value_size,
        Some((min, max)) => {
            let mut h = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let unit = (h ^ (h >> 31)) as f64 / u64::MAX as f64;
            ((min as f64) * (max as f64 / min as f64).powf(unit)) as usize
        }
    }
    .clamp(args.sizes.map_or(0, |(min, _)| min), max_value_size(args))
}

/// The largest value this run sends.
fn max_value_size(args: &Args) -> usize {
    args.sizes.map_or(args.value_size, |(_, max)| max)
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

/// Paces one connection's sends with nanosecond resolution: a periodic, non-blocking `timerfd` on
/// CLOCK_MONOTONIC (the clock `Instant` reads on Linux) that fires at every intended send time, registered
/// with the runtime. Periodic, so a send costs one `read` of the timer and no re-arming.
struct Pacer {
    fd: AsyncFd<std::os::fd::OwnedFd>,
}

impl Pacer {
    /// Fires at `first`, then every `interval`.
    fn new(first: Instant, interval: Duration) -> std::io::Result<Pacer> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: plain syscalls; the fd is checked and then owned by OwnedFd.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let mut now_ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let now = Instant::now();
        // SAFETY: now_ts is a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now_ts) };
        let first_ns = now_ts.tv_sec as u128 * 1_000_000_000
            + now_ts.tv_nsec as u128
            + first.saturating_duration_since(now).as_nanos()
            // 0 would disarm the timer.
            + 1;
        let timespec = |ns: u128| libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: timespec(interval.as_nanos().max(1)),
            it_value: timespec(first_ns),
        };
        // SAFETY: valid fd and itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for its lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Pacer { fd })
    }

    /// Waits until `at`, one of the timer's firing times (returns at once if it has passed).
    async fn sleep_until(&self, at: Instant) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // Expirations left over from a late reply may wake us early: check the time, not the count.
        while Instant::now() < at {
            let mut guard = self.fd.readable().await?;
            let _ = guard.try_io(|inner| {
                let mut expirations = [0u8; 8];
                // SAFETY: reads 8 bytes into a local buffer.
                let n = unsafe {
                    libc::read(
                        inner.get_ref().as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        8,
                    )
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        Ok(())
    }
}

/// Asks for precise timer wake-ups on this thread (the default slack is 50 us).
fn minimal_timer_slack() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// This process's CPU time (user + system) so far.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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
    let value = vec![b'v'; max_value_size(args)];
    let mut out = BytesMut::new();
    for i in 0..args.keys {
        Request::set(&key(i, args.key_size), &value[..value_size(args, i)], true).compose(&mut out);
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
    stream: std::net::TcpStream,
    started: Instant,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<ConnResult> {
    let mut stream = TcpStream::from_std(stream)?;
    let limits = Limits {
        max_value_len: max_value_size(&args).max(1 << 20),
        ..Limits::default()
    };
    let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (id as u64 + 1));
    let keys: Vec<Vec<u8>> = (0..args.keys).map(|i| key(i, args.key_size)).collect();
    let value = vec![b'x'; max_value_size(&args)];
    let get_threshold = (args.get_ratio * u64::MAX as f64) as u64;
    let mut out = BytesMut::with_capacity(max_value_size(&args) + 128);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut r = ConnResult {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ops: 0,
        hits: 0,
        misses: 0,
        errors: 0,
    };
    // Open loop: this connection's share of the rate, phase-shifted so the connections' sends interleave
    // evenly. `started` is shared by all connections, so the schedule is one evenly spaced sequence.
    let pacing = (args.rate > 0.0).then(|| {
        let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
        let phase = Duration::from_secs_f64(id as f64 / args.rate);
        (interval, started + phase)
    });
    let pacer = match pacing {
        Some((interval, first)) => Some(Pacer::new(first, interval)?),
        None => None,
    };
    let mut next_send = pacing.map(|(_, first)| first);
    while !stop.load(Ordering::Relaxed) {
        let i = (rng.next() % args.keys as u64) as usize;
        let k = &keys[i];
        let is_get = args.read_through || rng.next() < get_threshold;
        // Into the buffer, no allocation per request (the load generator shares the cores).
        let set = |out: &mut BytesMut| {
            Request::set(k, &value[..value_size(&args, i)], false).compose(out)
        };
        out.clear();
        if is_get {
            Request::Get {
                with_cas: false,
                touch: None,
                keys: Keys::from_raw(k),
            }
            .compose(&mut out);
        } else {
            set(&mut out);
        }
        let start = match (&pacer, next_send) {
            (Some(pacer), Some(at)) => {
                pacer.sleep_until(at).await?;
                // Latency counts from the intended send time, even if we send later because the
                // previous reply was late (coordinated omission).
                at
            }
            _ => Instant::now(),
        };
        if let (Some((interval, _)), Some(at)) = (pacing, next_send.as_mut()) {
            *at += interval;
        }
        stream.write_all(&out).await?;
        let (hit, mut error) = read_reply(&mut stream, &mut buf, &limits, is_get).await?;
        if args.read_through && !hit && !error {
            out.clear();
            set(&mut out);
            stream.write_all(&out).await?;
            error = read_reply(&mut stream, &mut buf, &limits, false).await?.1;
        }
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
    // Connect one at a time, in order, so the server sees the same accept order every run: servers that
    // hand connections to their threads round-robin (memcached, cache-node) then always split them the
    // same way. Each client thread takes a contiguous block of connections, so each client thread talks to
    // every server thread equally. (With concurrent connects the pairing of client and server threads was
    // random per run, and throughput swung by 2x between runs with it.)
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = std::net::TcpStream::connect(args.addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        streams.push(stream);
    }
    let per_thread = args.connections.div_ceil(threads);
    let mut blocks: Vec<Vec<(usize, std::net::TcpStream)>> = Vec::with_capacity(threads);
    let mut numbered = streams.into_iter().enumerate().peekable();
    while numbered.peek().is_some() {
        blocks.push(numbered.by_ref().take(per_thread).collect());
    }
    // The open-loop schedule's origin, a little ahead so every connection is up before its first send.
    let started = Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = blocks
        .into_iter()
        .map(|block| {
            let args = args.clone();
            let measuring = measuring.clone();
            let stop = stop.clone();
            std::thread::spawn(move || -> std::io::Result<Vec<ConnResult>> {
                if args.rate > 0.0 {
                    minimal_timer_slack();
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let tasks: Vec<_> = block
                        .into_iter()
                        .map(|(id, stream)| {
                            tokio::spawn(run_connection(
                                args.clone(),
                                id,
                                stream,
                                started,
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
    let measure_start = Instant::now();
    let cpu_start = process_cpu();
    std::thread::sleep(Duration::from_secs_f64(args.duration_secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = measure_start.elapsed().as_secs_f64();
    let cpu_used = process_cpu().saturating_sub(cpu_start);
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ops, mut hits, mut misses, mut errors) = (0, 0, 0, 0);
    let (mut conn_ops_min, mut conn_ops_max) = (u64::MAX, 0);
    for h in handles {
        for r in h.join().map_err(|_| "client thread panicked")?? {
            hist.add(&r.hist)?;
            if std::env::var_os("MCLOAD_PER_CONN").is_some() {
                eprint!("{} ", r.ops);
            }
            conn_ops_min = conn_ops_min.min(r.ops);
            conn_ops_max = conn_ops_max.max(r.ops);
            ops += r.ops;
            hits += r.hits;
            misses += r.misses;
            errors += r.errors;
        }
    }
    let slow = hist.count_between(args.slow_us, hist.max().max(args.slow_us));
    println!(
        "ops={ops} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} hits={hits} misses={misses} errors={errors} conn_ops_min={conn_ops_min} conn_ops_max={conn_ops_max} client_cpu_us_per_op={:.2} slow_pct={:.3}",
        ops as f64 / elapsed,
        hist.value_at_quantile(0.50),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        cpu_used.as_secs_f64() * 1e6 / ops.max(1) as f64,
        slow as f64 * 100.0 / ops.max(1) as f64,
    );
    Ok(())
}
