//! The `cache-node` binary: a memcached-compatible cache server, started like memcached, plus the
//! `replay` subcommand that measures the store's hit rate on a key trace.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use cache_node::clock::SystemClock;
use cache_node::listen;
use cache_node::maintainer;
use cache_node::protocol::Limits;
use cache_node::server::{self, Node, ServerConfig};
use cache_node::store::MAX_VALUE_LEN;

/// A memcached-compatible cache server with leases and a W-TinyLFU store.
///
/// Speaks the memcached text protocol, the meta protocol (mg/ms/md/ma/mn) and mcrouter's lease-get/lease-set.
#[derive(Parser, Debug)]
#[command(name = "cache-node", version, about, long_about = None)]
struct Cli {
    /// TCP port to listen on (memcached -p).
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    port: u16,
    /// Addresses to listen on (memcached -l). Loopback by default; 0.0.0.0 or * serves other hosts. As
    /// memcached: a list separated by commas (or -l more than once) of IPv4 addresses or host names, each
    /// optionally with :PORT (else -p's), IPv6 addresses in brackets ([::1], [::1]:11311) or bare without a
    /// port (::1), and * for every address of both families; a name is bound on all its addresses.
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1")]
    listen: Vec<String>,
    /// Memory budget for items in megabytes (memcached -m); the store evicts to stay within it. It must be
    /// large enough for an item of -I bytes (about 4 x -I for large items; the start-up error says).
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 30))]
    memory_mb: u64,
    /// Most simultaneous connections (memcached -c); extra ones get "ERROR Too many open connections".
    /// The open-files limit is raised to fit at start, as memcached does; if it cannot be, the server
    /// does not start.
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Largest item value (memcached -I), with an optional k or m suffix, e.g. 512k, 1m, 4m; below 16m
    /// and no more than -m can hold.
    #[arg(short = 'I', long = "max-item-size", default_value = "1m", value_parser = parse_size)]
    max_item_size: usize,
    /// Threads serving connections (memcached -t), 1 to 1024. Each owns the connections handed to it, as
    /// memcached's worker threads do, unless --work-stealing.
    #[arg(short = 't', long = "threads", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Port for Prometheus metrics over HTTP (GET /metrics) on the listen address; 0 = off.
    #[arg(long = "metrics-port", default_value_t = 0)]
    metrics_port: u16,
    /// Seconds a lease lasts when the client gives none (lease-get, mg N0): after it the next miss may
    /// lease. At least 1.
    #[arg(long = "lease-window-secs", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    lease_window_secs: u32,
    /// Most store shards (independent locks); more shards, less contention. Fewer are used when the
    /// memory limit is too small to give each a useful share.
    #[arg(long = "shards", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    shards: u16,
    /// Microseconds the maintainer thread (background expiry) leaves between wake-ups while requests
    /// arrive, counting the kernel's ticks as wake-ups (4 ms ticks and 2000: one wake-up mid-tick); idle,
    /// it backs off to once a second. Its wake-ups let the kernel reschedule when clients share the
    /// server's cores (see SERVER.md); 100 to 1000000 (memcached's maintainer: 1000 to 1000000).
    /// Default: 800 (four wake-ups a tick); with --work-stealing 2000, or 1000 when -t is also above the
    /// cores this process may run on.
    #[arg(long = "maintainer-sleep-us",
          value_parser = clap::value_parser!(u64).range(micros(maintainer::MIN_SLEEP)..=1_000_000))]
    maintainer_sleep_us: Option<u64>,
    /// A worker that runs out of requests yields its core before it waits for more, so a thread ready on
    /// that core (a client sharing it) runs at once. Where clients share the server's cores this cut p99
    /// at saturation to about a quarter and cost 1-4% of throughput (SERVER.md). Off by default.
    #[arg(long = "yield-when-idle")]
    yield_when_idle: bool,
    /// Serve all connections on one work-stealing runtime with -t workers, where a ready connection is
    /// served by whichever worker runs, instead of -t threads that each own their connections. Where
    /// clients share the server's cores this serves every connection at the same rate (owned
    /// connections here: up to 4x apart, as memcached's) at 5-9% less throughput (SERVER.md).
    #[arg(long = "work-stealing")]
    work_stealing: bool,
    /// UDP port (memcached -U). cache-node serves TCP only, so only 0, off (memcached's default since
    /// 1.5.6), is accepted: configurations written for memcached often say -U 0.
    #[arg(short = 'U', long = "udp-port", default_value_t = 0, value_parser = parse_udp_port)]
    udp_port: u16,
    /// When started as root, assume the identity of USER (its user and group, no supplementary groups) once
    /// the listeners are bound (memcached -u). Ignored, with a warning, when not started as root.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Write the process ID to FILE once listening (memcached -P); the file is removed at a clean stop.
    #[arg(short = 'P', long = "pidfile")]
    pidfile: Option<PathBuf>,
    /// Connections each listen address queues before they are accepted (memcached -b), 1 to 65535.
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=65535))]
    listen_backlog: u32,
    /// Log more (memcached -v, -vv): -v adds debug lines (connection errors), -vv each connection's
    /// arrival and end. RUST_LOG, when set, decides instead.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

fn parse_udp_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) => Ok(0),
        Ok(_) => Err("cache-node serves TCP only: leave -U out or give -U 0 (off)".to_string()),
        Err(_) => Err(format!("not a port number: {s:?}")),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay a key trace through the real store and print the hit rate (a get, then a set on a miss).
    Replay {
        /// Trace file: .gz (text, one key per line) or .xz (big-endian u32 keys; u64 if the name says u64).
        #[arg(long)]
        trace: PathBuf,
        /// Store capacity in items (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        capacity: u64,
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
    if !(1024..=MAX_VALUE_LEN).contains(&size) {
        return Err(format!(
            "item size must be between 1k and {MAX_VALUE_LEN} bytes (16m - 1: the store keeps a \
             value's length in 24 bits)"
        ));
    }
    Ok(size)
}

/// File descriptors the server needs besides client connections and its threads: listeners, the
/// metrics listener and up to 40 metrics requests (`metrics::MAX_CONCURRENT_SCRAPES`), the main
/// runtime's epoll and wake-up descriptors, the maintainer, stdio.
const FDS_BESIDES_CONNECTIONS: u64 = 64;

/// File descriptors each `-t` thread holds: a connection thread runs its own runtime, with an epoll,
/// an eventfd and a timer (measured: an idle server holds 12 + 4 x `-t`), so 8 leaves room.
const FDS_PER_THREAD: u64 = 8;

/// Makes sure `-c` connections can be open at once, as memcached does at start: the soft open-files limit
/// is raised to `-c` plus what the server needs besides (a share per `-t` thread included), and the hard
/// one too when that is allowed (root); if neither can be, the server does not start. Left at a lower
/// limit (1024 is common), every connection past it would wait in the listen backlog, `accept` failing
/// with EMFILE, instead of being served or refused with `ERROR Too many open connections`. (Until
/// session 31 the allowance did not grow with `-t`: `-c 1024 -t 32` under a limit of 1024 left 82 of
/// 1,024 connections unanswered.)
fn raise_open_files_limit(max_connections: u64, threads: u64) -> Result<(), String> {
    let needed = max_connections + FDS_BESIDES_CONNECTIONS + FDS_PER_THREAD * threads;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read the open-files limit: {}",
            std::io::Error::last_os_error()
        ));
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < needed {
        let hard = limit.rlim_max;
        limit.rlim_cur = needed;
        if hard != libc::RLIM_INFINITY && hard < needed {
            limit.rlim_max = needed;
        }
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            let error = std::io::Error::last_os_error();
            let ceiling = if hard == libc::RLIM_INFINITY {
                "the system's maximum (fs.nr_open)".to_string()
            } else {
                hard.to_string()
            };
            return Err(format!(
                "-c {max_connections} with -t {threads} needs {needed} open files, and the limit cannot be \
                 raised above {ceiling}: {error}; lower -c or raise the limit (ulimit -n, LimitNOFILE=)"
            ));
        }
    }
    Ok(())
}

/// memcached's `-u`: the user to become when started as root.
#[derive(Debug)]
enum Identity {
    /// Not started as root: nothing to give up, so `-u` is ignored (with a warning, once logging is up).
    NotRoot { user: String },
    /// The user's IDs, looked up at start.
    Root {
        user: String,
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
}

impl Identity {
    fn look_up(user: &str) -> Result<Identity, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Identity::NotRoot {
                user: user.to_string(),
            });
        }
        let name = std::ffi::CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
        // SAFETY: an all-zero passwd is a valid value for getpwnam_r to overwrite.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut strings = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the sizes given; only the integer IDs are read afterwards.
        let rc = unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                strings.as_mut_ptr(),
                strings.len(),
                &mut found,
            )
        };
        if rc != 0 || found.is_null() {
            return Err(format!("cannot find the user {user} to switch to (-u)"));
        }
        Ok(Identity::Root {
            user: user.to_string(),
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        })
    }

    /// Becomes the user: no supplementary groups, its group, then its user ID, in that order (after
    /// `setuid` the group calls would be refused). glibc applies each call to every thread of the process.
    fn assume(&self) -> Result<(), String> {
        let (user, uid, gid) = match self {
            Identity::NotRoot { user } => {
                tracing::warn!("-u {user} ignored: not started as root");
                return Ok(());
            }
            Identity::Root { user, uid, gid } => (user, *uid, *gid),
        };
        let failed = |what: &str| {
            format!(
                "cannot assume the identity of {user} (-u): {what}: {}",
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: plain system calls on integer arguments; setgroups(0, NULL) clears the list.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(failed("setgroups"));
            }
            if libc::setgid(gid) != 0 {
                return Err(failed("setgid"));
            }
            if libc::setuid(uid) != 0 {
                return Err(failed("setuid"));
            }
        }
        tracing::info!("running as {user} (uid {uid}, gid {gid})");
        Ok(())
    }
}

/// Prints a start-up failure as one `error:` line (clap's style) and exits 1, instead of the `Debug`
/// form `main` returning an error would print.
fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Size from which glibc's malloc serves a request from a mapping of its own, returned to the system
/// when freed (glibc's starting value).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// Keeps the threshold where it starts. A value over 16 KiB is read into a buffer of its size, freed once
/// it is stored. glibc raises its threshold to the size of the first mapped block freed, so from then on
/// such buffers came from heap arenas whose freed pages stay resident, beside a store that meanwhile
/// fills `-m`: 100 connections setting 1 MB values left 88 MB resident under `-m 64`, 200 left 130-190 MB
/// (session 32; `tests/cli.rs::concurrent_large_sets_leave_no_heap_behind`). Setting the threshold
/// explicitly turns that adjustment off (mallopt(3)).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_out_of_the_heap() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(Command::Replay { trace, capacity }) = &cli.command {
        let capacity = usize::try_from(*capacity).unwrap_or(usize::MAX);
        let report = cache_node::replay::run_replay(trace, capacity)?;
        println!("hit_rate={:.2}", report.hit_rate_percent());
        return Ok(());
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    keep_large_buffers_out_of_the_heap();
    let listen_specs = listen::parse(&cli.listen, cli.port)?;
    // Looked up now, so a wrong -u stops the start before anything listens; assumed once bound.
    let identity = cli.user.as_deref().map(Identity::look_up).transpose()?;
    raise_open_files_limit(u64::from(cli.max_connections), u64::from(cli.threads))?;
    let default_level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written is dropped. By default the subscriber reports the failure with
        // eprintln!, which panics when stderr is gone (a supervisor's pipe closed), and takes the process
        // down with it.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let threads = usize::from(cli.threads);
    let config = ServerConfig {
        limits: Limits {
            max_value_len: cli.max_item_size,
            ..Limits::default()
        },
        max_connections: cli.max_connections as usize,
        lease_window_secs: cli.lease_window_secs,
        memory_limit_bytes: usize::try_from(cli.memory_mb << 20)?,
        store_shards: usize::from(cli.shards),
        threads,
        port: cli.port,
        clock: Arc::new(SystemClock::new()),
        // None: the node derives it from -t and the cores (ServerConfig::effective_maintainer_busy_sleep).
        maintainer_busy_sleep: cli
            .maintainer_sleep_us
            .map(std::time::Duration::from_micros),
        yield_when_idle: cli.yield_when_idle,
        // memcached's model unless --work-stealing: `-t` connection threads, each with its own runtime and
        // epoll, connections handed to them round-robin (SERVER.md, "Threading").
        connection_threads: if cli.work_stealing { 0 } else { threads },
        ..ServerConfig::default()
    };
    let runtime = if cli.work_stealing {
        // `-t` workers serve the connections and metrics; a ready connection is served by whichever
        // worker runs, so a worker the kernel has descheduled does not hold up its connections. The main
        // thread only accepts (the accept loop runs inside block_on).
        config
            .configure_runtime(&mut tokio::runtime::Builder::new_multi_thread())
            .worker_threads(threads)
            .thread_name("cache-node-worker")
            .enable_all()
            .build()?
    } else {
        // The main thread accepts and serves metrics; the connection threads are started by the server.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let node = Node::new(config);
        // memcached refuses an -I above half of -m; the store's own bound is tighter (an item may take a
        // quarter of a shard's memory), so check against it: accepting the flag and then refusing every
        // large set as "object too large" would hide the mistake until clients hit it.
        let key_len = node.config.limits.max_key_len;
        let max_value = node.store.max_value_len(key_len);
        if cli.max_item_size > max_value {
            return Err(format!(
                "-I {} bytes does not fit in -m {} MB: the largest value the store can keep under a \
                 {key_len}-byte key is {max_value} bytes (an item may take a quarter of a store shard's \
                 memory); raise -m or lower -I",
                cli.max_item_size, cli.memory_mb
            )
            .into());
        }
        let shutdown = shutdown_signal()?;
        let listen::Bound { listeners, skipped } =
            listen::bind_all(&listen_specs, cli.listen_backlog)?;
        for (addr, e) in skipped {
            tracing::warn!("not listening on {addr}: {e}");
        }
        let mut addrs = Vec::with_capacity(listeners.len());
        for l in &listeners {
            let addr = l.local_addr()?;
            tracing::info!("cache-node listening on {addr}");
            addrs.push(addr);
        }
        if cli.metrics_port != 0 {
            // On each address the node listens on (once per address, whatever the ports).
            let mut ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
            let mut seen = std::collections::HashSet::new();
            ips.retain(|ip| seen.insert(*ip));
            for ip in ips {
                let maddr = SocketAddr::new(ip, cli.metrics_port);
                let mlistener = listen::bind(maddr, cli.listen_backlog)
                    .map_err(|e| format!("cannot listen on {maddr} (metrics): {e}"))?;
                tracing::info!("metrics on http://{}/metrics", mlistener.local_addr()?);
                tokio::spawn(cache_node::metrics::serve(
                    mlistener,
                    node.clone(),
                    std::future::pending::<()>(),
                ));
            }
        }
        // After binding (a port below 1024 needs root), before serving anyone.
        if let Some(identity) = &identity {
            identity.assume()?;
        }
        // Written as the user the server runs as (memcached writes it after giving up root too), so
        // the server can remove it at the stop; in a directory that user cannot write, the start
        // fails here, where before a root-owned file was written and then left behind.
        if let Some(path) = &cli.pidfile {
            std::fs::write(path, format!("{}\n", std::process::id()))
                .map_err(|e| format!("cannot write the pid file {}: {e}", path.display()))?;
        }
        server::run_listeners(listeners, node, shutdown).await?;
        if let Some(path) = &cli.pidfile {
            // The directory may have changed meanwhile (memcached neither checks).
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!("cannot remove the pid file {}: {e}", path.display());
            }
        }
        tracing::info!("cache-node stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// SIGTERM, SIGINT (Ctrl-C) or SIGUSR1, as a future; SIGHUP is logged and ignored. The handlers are
/// installed here, when called, not when the future is first polled: the server calls this before it
/// says it is listening, so a SIGTERM sent as soon as it listens stops it cleanly (pid file removed)
/// instead of killing it.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // memcached 1.6 stops on SIGUSR1 too (its graceful stop) and lives through SIGHUP; by default
    // either signal would kill the process, losing the cache and leaving the -P pid file behind
    // (a SIGHUP comes with the terminal that started it closing).
    let mut user1 = signal(SignalKind::user_defined1())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => break,
                _ = term.recv() => break,
                _ = user1.recv() => break,
                _ = hangup.recv() => tracing::info!("SIGHUP: ignored (SIGTERM, SIGINT or SIGUSR1 stop the server)"),
            }
        }
    })
}
