//! The TCP server: accepts connections on an already-bound listener and serves the memcached protocol.
//!
//! mini-redis style: [`run`] takes a bound [`TcpListener`] (tests bind port 0) and a shutdown future; each
//! connection is a task owning a [`Connection`] (the socket and its read/write buffers). A connection parses
//! every complete request in its read buffer, appends all replies to one write buffer and writes it with
//! one `write_all`, so pipelined requests cost one syscall each way. The data block of a large value is
//! read straight into its item's memory ([`Store::land`]) while its line waits in the read buffer. There
//! is no global lock: the store is sharded, counters are per connection and added to the node's in
//! batches.
//!
//! Not here: parsing ([`crate::protocol`]), command meaning ([`crate::commands`]), metrics HTTP
//! ([`crate::metrics`]).

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::clock::{Clock, SystemClock};
use crate::commands::{Flow, Session, VERSION};
use crate::maintainer::{self, Maintainer};
use crate::protocol::{
    decode_key, parse_landed_request, parse_long_get_rest, parse_request, reply, Limits,
    LongGetLine, Parsed, ProtocolError, Swallow, MAX_KEY_LEN,
};
use crate::stats::CounterSlots;
use crate::store::{Landing, Reservation, Store, StoreConfig, StoreError};

/// Replies buffered before they are written out even if more requests are waiting in the read buffer.
/// It bounds what a client that stops reading makes its connection hold: this plus one value, since the
/// connection waits for the socket before it runs the next request (memcached holds references to the
/// items instead of copies). With 1 MiB, 500 such clients sending `get`s of a 1 KB value held 1.44 MB
/// each (memcached: 17 KB); a client with one request in flight never comes near it, and a deep pipeline
/// of small values still writes 32 replies of 1 KB per system call. Kept at half of
/// [`MAX_KEPT_BUFFER_BYTES`] so that a batch of values up to this size does not outgrow the buffer kept.
pub const MAX_BATCH_REPLY_BYTES: usize = 32 * 1024;

/// A connection's read and write buffers start at this size. Of a large data block still arriving, this
/// much needs no room held in the store ([`buffered_ahead`]).
pub const BUFFER_BYTES: usize = 16 * 1024;
/// A connection's buffer (read, write, or the session's scratch for append) that grew past this for a
/// large value or reply is given back once it is no longer needed. Kept, it would stay with the
/// connection for good, outside the memory limit: 200 idle connections that had each sent one 1 MB value
/// held 207 MB (given back: 20 MB; memcached, which reads a value into its item, 15 MB), and 200 that had
/// each appended to a 1 MB value 197 MB.
pub(crate) const MAX_KEPT_BUFFER_BYTES: usize = 64 * 1024;
const _: () = assert!(2 * MAX_BATCH_REPLY_BYTES <= MAX_KEPT_BUFFER_BYTES);
/// A connection yields its worker once its replies are out when its read filled the buffer (more is
/// waiting), or when it has sent this many bytes since it last let others run (memcached's `-R`, which
/// lets a connection run 20 requests per event). One client pipelining requests without pause would
/// otherwise be served for as long as tokio's coop budget lasts (about 128 reads and writes) while every
/// other connection on that worker waits. A client that waits for its replies rarely reaches either.
const YIELD_AFTER_READ_BYTES: usize = 32 * 1024;
/// A data block longer than this that is not all in yet is buffered only into room the store holds for
/// it ([`Store::reserve`]); a shorter one fits in the buffer a connection has anyway.
pub const RESERVE_DATA_ABOVE_BYTES: usize = BUFFER_BYTES;

/// Runs `store_it` with `value` as a connection that received it as a data block would hand it to its
/// command: a value with a mapping of its own is first written into its landing ([`Store::land`]),
/// so that the insert adopts that memory, and room is held ([`Store::reserve`]) for one longer than
/// [`RESERVE_DATA_ABOVE_BYTES`] otherwise, given back before `store_it` runs. For tests and examples
/// that drive the store with the server's memory pattern but no sockets. Stores nothing itself.
pub fn as_received<R>(
    store: &Store,
    key: &[u8],
    value: &[u8],
    flags: u32,
    store_it: impl FnOnce(&[u8]) -> R,
) -> R {
    if value.len() <= RESERVE_DATA_ABOVE_BYTES {
        return store_it(value);
    }
    match store.land(key, value.len(), flags, BUFFER_BYTES) {
        Ok(Some(mut landing)) => {
            if landing.grow_to(value.len()).is_err() {
                // The server would refuse it; `store_it` meets the same error.
                return store_it(value);
            }
            landing.write(value);
            store_it(landing.value())
        }
        Ok(None) => {
            let block = value.len() + 2;
            drop(store.reserve(key, block, block - BUFFER_BYTES));
            store_it(value)
        }
        // The server would refuse it; `store_it` meets the same error.
        Err(_) => store_it(value),
    }
}

/// How much of a large data block, `arrived` bytes of it in, may be buffered before the next hold:
/// twice what has arrived plus one buffer. The room held is that less the [`BUFFER_BYTES`] any
/// connection may buffer anyway, and a read takes no more than that. So a client that sends a value's
/// line and stalls holds nothing, and one that stalls midway at most twice what it sent, while a 1 MB
/// value is read in 7 holds and reads of growing size. Holding the whole block from its line on
/// instead let stalled clients evict whole values' worth of items for good: 70 bare
/// `set k 0 0 1000000` lines evicted 31,248 of 40,000 items of 1 KB with `-m 64` (memcached, which
/// evicts only from the value's own size class, none).
fn buffered_ahead(arrived: usize, block: usize) -> usize {
    (2 * arrived + BUFFER_BYTES).min(block)
}

/// Default connection limit (memcached's `-c` default).
pub fn default_max_connections() -> usize {
    1024
}
/// Default lease window in seconds.
pub fn default_lease_window_secs() -> u32 {
    10
}
/// Default memory budget in megabytes (memcached's `-m` default).
pub fn default_memory_mb() -> usize {
    64
}

/// Everything the node needs to serve. Build with struct update syntax over [`ServerConfig::default`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Parser limits: key length, item size (`-I`), line length.
    pub limits: Limits,
    /// Connections over this many are refused with `ERROR Too many open connections` (`-c`).
    pub max_connections: usize,
    /// How long a lease placeholder lives when the client gives no TTL (`lease-get`, `mg N0`).
    pub lease_window_secs: u32,
    /// The store's memory budget in bytes (`-m` in megabytes).
    pub memory_limit_bytes: usize,
    /// Store shards (independent locks).
    pub store_shards: usize,
    /// Worker threads, reported in `stats` (the runtime is built by the binary).
    pub threads: usize,
    /// TCP port, reported in `stats settings`.
    pub port: u16,
    /// The time source: the system clock in production, a `ManualClock` in TTL tests.
    pub clock: Arc<dyn Clock>,
    /// Item slots the background expiry walk examines per second (spread over the maintainer's wake-ups).
    pub expire_slots_per_sec: u64,
    /// The longest the maintainer thread leaves between wake-ups while requests arrive, counting the
    /// kernel's ticks as wake-ups (`--maintainer-sleep-us`). `None` derives it from the workers and the
    /// cores when the node is built ([`ServerConfig::effective_maintainer_busy_sleep`]), so a library
    /// user who sets only `threads` gets the spacing the binary would choose.
    pub maintainer_busy_sleep: Option<Duration>,
    /// The longest the maintainer sleeps once the node is idle (its sleep doubles up to this).
    pub maintainer_idle_sleep_max: Duration,
    /// A thread serving connections that runs out of requests yields its core (`sched_yield`) before it
    /// blocks (`--yield-when-idle`): a thread ready on that core, such as a client sharing it, runs at
    /// once instead of at the next tick or wake-up. Shortens the tail and costs throughput where clients
    /// share the server's cores (SERVER.md); off by default. Applied by [`ServerConfig::configure_runtime`].
    pub yield_when_idle: bool,
    /// CAS values and lease tokens start above this ([`StoreConfig::first_cas`]); by default the wall
    /// clock in nanoseconds at [`ServerConfig::default`], so tokens from before a restart are void after it.
    pub first_cas: u64,
    /// Connection threads: with N > 0, [`run`] starts N threads, each with its own single-threaded tokio
    /// runtime (memcached's model: a connection stays on one thread, no work stealing, no cross-thread
    /// wake-ups), and hands accepted connections to them round-robin. With 0, connections are spawned on
    /// the caller's runtime: the binary's multi-threaded one with `threads` workers, where a ready
    /// connection is served by whichever worker runs (see SERVER.md for why the binary uses that).
    pub connection_threads: usize,
}

impl ServerConfig {
    /// The maintainer's busy sleep: the one set, or [`maintainer::default_busy_sleep_for`] the threads
    /// that serve connections (`connection_threads`, which own them, or `threads` when those are 0) and
    /// the cores this process may run on.
    pub fn effective_maintainer_busy_sleep(&self) -> Duration {
        self.maintainer_busy_sleep.unwrap_or_else(|| {
            let workers = if self.connection_threads > 0 {
                self.connection_threads
            } else {
                self.threads
            };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            maintainer::default_busy_sleep_for(workers, cores, self.connection_threads > 0)
        })
    }

    /// Applies the settings that belong to the threads serving connections to a tokio runtime's builder:
    /// the binary's multi-threaded runtime, and each connection thread's own (`connection_threads`).
    pub fn configure_runtime<'b>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        if self.yield_when_idle {
            builder.on_thread_park(std::thread::yield_now);
        }
        builder
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_connections: default_max_connections(),
            lease_window_secs: default_lease_window_secs(),
            memory_limit_bytes: default_memory_mb() << 20,
            store_shards: 64,
            threads: 4,
            port: 0,
            clock: Arc::new(SystemClock::new()),
            expire_slots_per_sec: maintainer::default_expire_slots_per_sec(),
            maintainer_busy_sleep: None,
            maintainer_idle_sleep_max: maintainer::default_idle_sleep_max(),
            yield_when_idle: false,
            first_cas: crate::store::default_first_cas(),
            connection_threads: 0,
        }
    }
}

/// The node's shared state: one per server, shared by every connection and the metrics endpoint.
pub struct Node {
    /// The items.
    pub store: Store,
    /// Time source shared with the store.
    pub clock: Arc<dyn Clock>,
    /// The configuration it was started with.
    pub config: ServerConfig,
    /// Request counters (memcached names), one slot per connection thread or worker.
    pub counters: CounterSlots,
    /// Open connections (a gauge, updated at open and close).
    pub curr_connections: AtomicU64,
    /// Times the maintainer thread woke (shows its back-off: about once a second when idle).
    pub maintainer_wakeups: AtomicU64,
    /// The kernel tick, in microseconds, between which the maintainer places its busy wake-ups; 0 while
    /// it knows none (they then fall at random phase). Shows whether a deployment gets the placement.
    pub maintainer_tick_us: AtomicU64,
}

impl Node {
    /// Builds the node and its store.
    pub fn new(mut config: ServerConfig) -> Arc<Node> {
        // Fixed once, so the maintainer and `stats settings` see the same spacing.
        config.maintainer_busy_sleep = Some(config.effective_maintainer_busy_sleep());
        let store = Store::new(
            StoreConfig {
                memory_limit_bytes: config.memory_limit_bytes,
                shards: effective_shards(
                    config.store_shards,
                    config.memory_limit_bytes,
                    config.limits.max_value_len,
                    config.threads,
                ),
                first_cas: config.first_cas,
                ..StoreConfig::default()
            },
            config.clock.clone(),
        );
        // One slot per connection thread, or per worker when connections share the caller's runtime.
        let counters = CounterSlots::new(config.connection_threads.max(config.threads).max(1));
        Arc::new(Node {
            store,
            clock: config.clock.clone(),
            config,
            counters,
            curr_connections: AtomicU64::new(0),
            maintainer_wakeups: AtomicU64::new(0),
            maintainer_tick_us: AtomicU64::new(0),
        })
    }

    /// General stats as (memcached name, value), in memcached's order where it has one.
    pub fn stats_lines(&self) -> Vec<(&'static str, String)> {
        let now = self.clock.now();
        let s = self.store.stats();
        let mut v: Vec<(&'static str, String)> = vec![
            ("pid", std::process::id().to_string()),
            ("uptime", now.to_string()),
            ("time", self.clock.unix_now().to_string()),
            ("version", VERSION.to_string()),
            (
                "pointer_size",
                (8 * std::mem::size_of::<usize>()).to_string(),
            ),
        ];
        let (user, system) = cpu_time_used();
        v.extend([
            ("rusage_user", user),
            ("rusage_system", system),
            (
                "curr_connections",
                self.curr_connections.load(Ordering::Relaxed).to_string(),
            ),
            ("max_connections", self.config.max_connections.to_string()),
        ]);
        for (name, _, value) in self.counters.snapshot() {
            v.push((name, value.to_string()));
        }
        v.extend([
            ("get_expired", s.get_expired.to_string()),
            // memcached counts reads that find an item killed by flush_all; this store removes flushed
            // items eagerly in flush_all, so no read can find one and the figure is 0 by construction.
            ("get_flushed", "0".to_string()),
            ("limit_maxbytes", s.limit_maxbytes.to_string()),
            ("threads", self.config.threads.to_string()),
            ("bytes", s.bytes.to_string()),
            // Of `bytes`, the room held for large values still arriving on connections.
            ("reserved_bytes", s.reserved_bytes.to_string()),
            ("curr_items", s.curr_items.to_string()),
            ("total_items", s.total_items.to_string()),
            ("expired_unfetched", s.expired_unfetched.to_string()),
            ("evicted_unfetched", s.evicted_unfetched.to_string()),
            ("evictions", s.evictions.to_string()),
            ("reclaimed", s.reclaimed.to_string()),
            ("crawler_reclaimed", s.crawler_reclaimed.to_string()),
            ("slab_page_evictions", s.slab_page_evictions.to_string()),
            ("slabs_moved", s.slabs_moved.to_string()),
            ("slab_reassign_rescues", s.slab_reassign_rescues.to_string()),
            ("window_items", s.window_items.to_string()),
            ("probation_items", s.probation_items.to_string()),
            ("protected_items", s.protected_items.to_string()),
            ("ghost_admissions", s.ghost_admissions.to_string()),
            (
                "ghost_admissions_declined",
                s.ghost_admissions_declined.to_string(),
            ),
            ("cold_victims", s.cold_victims.to_string()),
            ("cold_victims_declined", s.cold_victims_declined.to_string()),
            ("size_refusals", s.size_refusals.to_string()),
            ("size_evictions", s.size_evictions.to_string()),
            ("values_read_in_place", s.values_read_in_place.to_string()),
            (
                "maintainer_wakeups",
                self.maintainer_wakeups.load(Ordering::Relaxed).to_string(),
            ),
            (
                "maintainer_tick_us",
                self.maintainer_tick_us.load(Ordering::Relaxed).to_string(),
            ),
        ]);
        v
    }

    /// `stats slabs` as (memcached name, value): per size class in use, numbered as memcached numbers
    /// its default classes ([`crate::store::class_id`] groups the arenas' finer chunk sizes), its
    /// chunk size and pages and how many chunks hold items, were freed, or were never handed out;
    /// then the count of classes and the bytes the item pages count against the budget. memcached's
    /// per-class command counters (`get_hits`, `cmd_set`, ...) are not kept per class here and are
    /// left out.
    pub fn slabs_lines(&self) -> Vec<(String, String)> {
        let (classes, counted) = self.store.slab_classes();
        let mut v = Vec::with_capacity(classes.len() * 7 + 2);
        for c in &classes {
            let id = c.id;
            v.extend([
                (format!("{id}:chunk_size"), c.chunk_size.to_string()),
                (
                    format!("{id}:chunks_per_page"),
                    c.chunks_per_page.to_string(),
                ),
                (format!("{id}:total_pages"), c.total_pages.to_string()),
                (format!("{id}:total_chunks"), c.total_chunks.to_string()),
                (format!("{id}:used_chunks"), c.used_chunks.to_string()),
                (format!("{id}:free_chunks"), c.free_chunks.to_string()),
                (
                    format!("{id}:free_chunks_end"),
                    c.free_chunks_end.to_string(),
                ),
            ]);
        }
        v.push(("active_slabs".into(), classes.len().to_string()));
        v.push(("total_malloced".into(), counted.to_string()));
        v
    }

    /// `stats items` as (memcached name, value): the items in each size class, numbered as in
    /// `stats slabs`, and the evictions of its items (memcached-tool's "Evicted"). Eviction here is
    /// by one W-TinyLFU policy per shard, not by an LRU per class, so memcached's per-class LRU
    /// figures (`age`, `evicted_time`, the hot/warm/cold counts, `outofmemory`) are left out.
    pub fn items_lines(&self) -> Vec<(String, String)> {
        let (classes, _) = self.store.slab_classes();
        classes
            .iter()
            .flat_map(|c| {
                [
                    (format!("items:{}:number", c.id), c.used_chunks.to_string()),
                    (format!("items:{}:evicted", c.id), c.evicted.to_string()),
                ]
            })
            .collect()
    }

    /// `stats settings` as (memcached name, value).
    pub fn settings_lines(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        vec![
            ("maxbytes", c.memory_limit_bytes.to_string()),
            ("maxconns", c.max_connections.to_string()),
            ("tcpport", c.port.to_string()),
            // No UDP listener, as memcached 1.6 by default; flush_all is always allowed.
            ("udpport", "0".into()),
            ("flush_enabled", "yes".into()),
            ("num_threads", c.threads.to_string()),
            // The threads that own connections (memcached's model); 0: connections run on the embedding
            // runtime (the binary's `--work-stealing` one).
            ("connection_threads", c.connection_threads.to_string()),
            ("cas_enabled", "yes".into()),
            ("evictions", "on".into()),
            ("item_size_max", c.limits.max_value_len.to_string()),
            ("key_max_length", c.limits.max_key_len.to_string()),
            ("line_max_length", c.limits.max_line_len.to_string()),
            ("lease_window_secs", c.lease_window_secs.to_string()),
            (
                "maintainer_sleep_us",
                c.effective_maintainer_busy_sleep().as_micros().to_string(),
            ),
            ("expire_slots_per_sec", c.expire_slots_per_sec.to_string()),
            (
                "yield_when_idle",
                if c.yield_when_idle { "yes" } else { "no" }.into(),
            ),
            (
                "store_shards",
                effective_shards(
                    c.store_shards,
                    c.memory_limit_bytes,
                    c.limits.max_value_len,
                    c.threads,
                )
                .to_string(),
            ),
            ("eviction_policy", "w-tinylfu".into()),
        ]
    }
}

/// A shard's share of the budget below which more shards cost memory: each shard keeps a partly used
/// page in every size class it uses, so with values of 100-10,000 bytes in 343 MiB, 64 shards of 5.4 MiB
/// kept 0.75 of memcached's items and 16 shards of 21 MiB 0.87 (STORE.md, "Mixed sizes, session 9").
pub const USEFUL_SHARD_BYTES: usize = 16 << 20;

/// Shards per worker thread that [`USEFUL_SHARD_BYTES`] never brings the count below, so that two
/// threads seldom want the same shard's lock at once.
pub const SHARDS_PER_THREAD: usize = 4;

/// The store splits its budget evenly over its shards, and an item must fit in one shard's share. So
/// that the largest item (`-I`, plus key and header) always fits, each shard gets at least four times
/// that (the store caps an item at a quarter of its shard): with `-m 64 -I 1m` that is 8 shards, with
/// `-m 8` one. Within that, each shard gets at least [`USEFUL_SHARD_BYTES`] unless that would leave fewer
/// than [`SHARDS_PER_THREAD`] per worker thread: `-m 343 -t 4` gets 16 shards, `-m 64 -t 4` 8, `-m 4096`
/// 64. Never more shards than `requested`, never fewer than one.
pub fn effective_shards(
    requested: usize,
    memory_limit_bytes: usize,
    max_value_len: usize,
    threads: usize,
) -> usize {
    // Power of two at or below `n` (at least 1), as the store rounds shard counts up to one.
    let power_of_two_at_most = |n: usize| 1usize << (usize::BITS - 1 - n.max(1).leading_zeros());
    let per_shard = (4 * (max_value_len + 4096)).max(1 << 20);
    let item_fit = power_of_two_at_most(memory_limit_bytes / per_shard);
    let useful = power_of_two_at_most(memory_limit_bytes / USEFUL_SHARD_BYTES)
        .max((SHARDS_PER_THREAD * threads.max(1)).next_power_of_two());
    requested.clamp(1, item_fit.min(useful))
}

/// CPU time the process has used in user and in system mode, as memcached's `rusage_user` and
/// `rusage_system` print it (`seconds.microseconds`); monitoring agents graph the server's CPU from them.
fn cpu_time_used() -> (String, String) {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF cannot fail with it.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// Serves connections from `listener` until `shutdown` completes. Runs the maintainer thread meanwhile
/// (background expiry; see [`crate::maintainer`]).
pub async fn run(listener: TcpListener, node: Arc<Node>, shutdown: impl Future) -> io::Result<()> {
    run_listeners(vec![listener], node, shutdown).await
}

/// [`run`] over several listeners (`-l` with a list, a host name with more than one address, `*`): one
/// node, one maintainer, one connection limit, whichever listener a connection arrives on.
pub async fn run_listeners(
    listeners: Vec<TcpListener>,
    node: Arc<Node>,
    shutdown: impl Future,
) -> io::Result<()> {
    let maintainer = Maintainer::start(node.clone())?;
    tokio::pin!(shutdown);
    let pool = (node.config.connection_threads > 0)
        .then(|| WorkerPool::start(node.config.connection_threads, &node))
        .transpose()?;
    let mut next = 0usize;
    let mut listener_turn = 0usize;
    // Connections spawned on this runtime (no pool), aborted at shutdown. Connections do not watch a
    // shutdown signal themselves: that would register every idle read with one shared waiter list.
    let mut connections = tokio::task::JoinSet::new();
    let mut accept_failures = AcceptFailures::default();
    let result = loop {
        tokio::select! {
            accepted = accept_any(&listeners, &mut listener_turn) => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and similar: back off instead of spinning.
                    Err(e) => {
                        match accept_failures.note(Instant::now()) {
                            Some(0) => tracing::warn!("accept failed: {e}"),
                            Some(unlogged) => tracing::warn!(
                                "accept failed: {e} ({unlogged} failures since the last line were not logged)"
                            ),
                            None => {}
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                tracing::trace!("new connection from {peer}");
                next = next.wrapping_add(1);
                match &pool {
                    Some(pool) => {
                        // One connection that cannot move to its thread is dropped; the node serves on.
                        if let Err(e) = pool.hand_over(socket, peer, next) {
                            tracing::debug!("connection from {peer} dropped: {e}");
                        }
                    }
                    None => {
                        connections.spawn(serve_and_log(socket, peer, node.clone()));
                        // Reap finished connections so the set stays as small as the open ones.
                        while connections.try_join_next().is_some() {}
                    }
                }
            }
            _ = &mut shutdown => break Ok(()),
        }
    };
    maintainer.stop();
    connections.abort_all();
    if let Some(pool) = pool {
        pool.join();
    }
    result
}

/// Serves one accepted connection to its end and logs how it ended (`-vv` shows the close, `-v` an error).
async fn serve_and_log(socket: TcpStream, peer: std::net::SocketAddr, node: Arc<Node>) {
    match serve_socket(socket, node).await {
        Ok(()) => tracing::trace!("connection from {peer} closed"),
        Err(e) => tracing::debug!("connection from {peer} ended: {e}"),
    }
}

/// The next connection on any of `listeners`, asking them in turn from the one after the listener of the
/// previous connection (`turn`), so a busy listener does not starve the others.
async fn accept_any(
    listeners: &[TcpListener],
    turn: &mut usize,
) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    std::future::poll_fn(|cx| {
        for i in 0..listeners.len() {
            let at = (*turn + i) % listeners.len();
            if let std::task::Poll::Ready(accepted) = listeners[at].poll_accept(cx) {
                *turn = at + 1;
                return std::task::Poll::Ready(accepted);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Connection threads, each running a single-threaded tokio runtime.
struct WorkerPool {
    /// One channel per thread; accepted sockets travel as std sockets (with the peer, for the log) and
    /// are registered on arrival.
    senders: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, std::net::SocketAddr)>>,
    /// The threads, joined at shutdown.
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WorkerPool {
    fn start(n: usize, node: &Arc<Node>) -> io::Result<WorkerPool> {
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let node = node.clone();
            let runtime = node
                .config
                .configure_runtime(&mut tokio::runtime::Builder::new_current_thread())
                .enable_all()
                .build()?;
            let thread = std::thread::Builder::new()
                .name(format!("cache-node-conn-{i}"))
                .spawn(move || {
                    // This thread's connections count into slot i (the hand-over test reads it).
                    crate::stats::set_thread_slot(i);
                    runtime.block_on(async move {
                        // Ends when the pool drops its senders (shutdown).
                        while let Some((socket, peer)) = rx.recv().await {
                            match TcpStream::from_std(socket) {
                                Ok(socket) => {
                                    tokio::spawn(serve_and_log(socket, peer, node.clone()));
                                }
                                Err(e) => tracing::debug!("connection from {peer} dropped: {e}"),
                            }
                        }
                    });
                    // Dropping the runtime here cancels the connections still open.
                })?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(WorkerPool { senders, threads })
    }

    fn hand_over(&self, socket: TcpStream, peer: std::net::SocketAddr, n: usize) -> io::Result<()> {
        let socket = socket.into_std()?;
        let _ = self.senders[n % self.senders.len()].send((socket, peer));
        Ok(())
    }

    fn join(self) {
        drop(self.senders);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Serves one client.
async fn serve_socket(mut socket: TcpStream, node: Arc<Node>) -> io::Result<()> {
    let _ = socket.set_nodelay(true);
    let counters = node.counters.current();
    let open = node.curr_connections.fetch_add(1, Ordering::AcqRel) + 1;
    let _guard = ConnectionGuard(&node.curr_connections);
    if open > node.config.max_connections as u64 {
        // Counted as rejected only, as memcached, which never makes a connection of it.
        counters
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        socket.write_all(reply::TOO_MANY_CONNECTIONS).await?;
        return Ok(());
    }
    counters.total_connections.fetch_add(1, Ordering::Relaxed);
    let mut conn = Connection::new(socket, &node);
    conn.serve().await
}

/// Decrements the open-connection gauge when the connection ends, however it ends.
struct ConnectionGuard<'a>(&'a AtomicU64);
impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One client connection: the socket, its buffers and its command session.
pub struct Connection<'n> {
    /// The client socket.
    socket: TcpStream,
    /// Bytes read and not yet parsed (a partial request waits here for the rest).
    read_buf: BytesMut,
    /// Replies of the current batch, written with one `write_all`.
    write_buf: BytesMut,
    /// Input still to drop after a refused request (its data block or the rest of an over-long line).
    swallow: Swallow,
    /// A get line longer than the line bound whose first parts are answered: the buffer starts
    /// within it, at a key, and is parsed with [`parse_long_get_rest`] until its newline. Without
    /// it, such a line is refused, or has to be buffered whole.
    long_get: Option<LongGetLine>,
    /// Executes requests; holds this connection's counters.
    session: Session<'n>,
    /// Parser limits from the node's config.
    limits: Limits,
    /// The store, for holding room for a large value while it arrives.
    store: &'n Store,
    /// Room held in the store's budget for the data block of the request at the head of the read buffer,
    /// which is still arriving, as much as [`buffered_ahead`] lets in. Without it, `-c`
    /// connections each sending an `-I` value slowly would buffer up to `-c` x `-I` bytes beyond `-m`.
    /// Dropped once that request is parsed (before it runs, so its insert can use the room) or the
    /// connection ends.
    reservation: Option<Reservation<'n>>,
    /// The most the next read may take: the room held ahead of what has arrived while there is a
    /// reservation, so that what is buffered stays within it; unbounded otherwise.
    read_at_most: usize,
    /// The memory of the item a large value arriving will be (one with a mapping of its own), which
    /// the reads fill directly while its request line waits at the head of the read buffer; the
    /// block's `\r\n` and what follows are read into the buffer again. memcached reads a value
    /// into its item the same way; read into the buffer and then copied, each large set cost a
    /// buffer's page faults, a copy and a new mapping's (STORE.md, session 36). Dropped once the
    /// request has run (its insert took the memory as the item's) or the connection ends.
    landing: Option<Landing<'n>>,
}

impl<'n> Connection<'n> {
    fn new(socket: TcpStream, node: &'n Node) -> Self {
        Connection {
            socket,
            // No buffers until the connection has something to read: an idle connection holds none.
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            swallow: Swallow::Nothing,
            long_get: None,
            session: Session::new(node),
            limits: node.config.limits,
            store: &node.store,
            reservation: None,
            read_at_most: usize::MAX,
            landing: None,
        }
    }

    async fn serve(&mut self) -> io::Result<()> {
        // Whether the read buffer grew past MAX_KEPT_BUFFER_BYTES. Noted when it grows because
        // `capacity()` no longer shows the allocation once requests are consumed from the front.
        let mut read_buf_grown = false;
        // Bytes read since this connection last yielded its worker (see YIELD_AFTER_READ_BYTES).
        let mut read_since_yield = 0;
        loop {
            self.socket.readable().await?;
            if self.read_buf.capacity() == 0 {
                self.read_buf = idle_buffers::take();
            }
            if self.write_buf.capacity() == 0 {
                self.write_buf = idle_buffers::take();
            }
            let (n, space) = if let Some(landing) = self.landing.as_mut().filter(|l| !l.is_full()) {
                // A large value's data, straight into its item's memory, as far as it is held.
                let (to, room) = landing.unfilled();
                if room == 0 {
                    // All that is held is in: `process_buffer` holds more (it does so after every
                    // read, so this is not reached). A read into no room would look like the end of
                    // the stream.
                    (0, 1)
                } else {
                    // SAFETY: `to` is writable for `room` bytes (the landing's value, held and
                    // resident).
                    match unsafe { recv_into(&self.socket, to, room) } {
                        Ok(0) => return Ok(()),
                        Ok(n) => {
                            landing.advance(n);
                            (n, room)
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
            } else {
                if self.read_buf.capacity() - self.read_buf.len() < 4096 {
                    self.read_buf.reserve(BUFFER_BYTES);
                    read_buf_grown |= self.read_buf.capacity() > MAX_KEPT_BUFFER_BYTES;
                }
                if let Some(held) = &self.reservation {
                    // Read the value into one buffer of its size instead of growing (and copying) the
                    // buffer in steps; its pages become resident only as the reads fill them.
                    let want = held.total() + BUFFER_BYTES;
                    if self.read_buf.capacity() < want {
                        match idle_buffers::take_large(want) {
                            Some(mut large) => {
                                large.extend_from_slice(&self.read_buf);
                                let small = std::mem::replace(&mut self.read_buf, large);
                                idle_buffers::give(small, read_buf_grown);
                            }
                            None => self.read_buf.reserve(want - self.read_buf.len()),
                        }
                        read_buf_grown = true;
                    }
                }
                let space = (self.read_buf.capacity() - self.read_buf.len()).min(self.read_at_most);
                let n = match self.read_available(space) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    // Spurious readiness; tokio cleared it, wait for the next event (without buffers if idle).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.read_buf.is_empty() {
                            self.give_back_buffers(read_buf_grown);
                            read_buf_grown = false;
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                (n, space)
            };
            self.session.counters.bytes_read += n as u64;
            loop {
                let (flow, more) = self.process_buffer();
                self.session.counters.bytes_written += self.write_buf.len() as u64;
                // Counted before the reply leaves, so a client that saw the reply sees it in stats too.
                self.session.flush_counters();
                if !self.write_buf.is_empty() {
                    self.socket.write_all(&self.write_buf).await?;
                    self.write_buf.clear();
                }
                if flow == Flow::Close {
                    return Ok(());
                }
                if !more {
                    break;
                }
            }
            read_since_yield += n;
            if n == space || read_since_yield >= YIELD_AFTER_READ_BYTES {
                read_since_yield = 0;
                tokio::task::yield_now().await;
            }
            // All replies are out. With nothing left to parse, the connection waits for its next request
            // without buffers (memcached 1.6 likewise returns an idle connection's read buffer to its
            // thread): they go back to this thread's idle list, or to the allocator if they grew for a
            // large value or reply. With a partial request left, buffers that grew are given back unless
            // that request is a large value still arriving. (Not between the batches of one long reply: it
            // would grow the write buffer again for every batch.)
            if self.read_buf.is_empty() {
                self.give_back_buffers(read_buf_grown);
                read_buf_grown = false;
                continue;
            }
            if self.write_buf.capacity() > MAX_KEPT_BUFFER_BYTES {
                let grown = std::mem::replace(&mut self.write_buf, idle_buffers::take());
                idle_buffers::give(grown, true);
            }
            if read_buf_grown && self.read_buf.len() <= BUFFER_BYTES / 2 {
                let mut smaller = BytesMut::with_capacity(BUFFER_BYTES);
                smaller.extend_from_slice(&self.read_buf);
                self.read_buf = smaller;
                read_buf_grown = false;
            }
        }
    }

    /// Hands both (empty) buffers to this thread's idle list, so the connection holds none while it waits.
    /// `read_buf_grown`: the read buffer grew past [`MAX_KEPT_BUFFER_BYTES`], so it is freed instead.
    fn give_back_buffers(&mut self, read_buf_grown: bool) {
        idle_buffers::give(std::mem::take(&mut self.read_buf), read_buf_grown);
        idle_buffers::give(std::mem::take(&mut self.write_buf), false);
    }

    /// Reads what the socket holds, up to `space` bytes (at most the read buffer's spare capacity), into
    /// the read buffer ([`recv_into`]; `Ok(0)` at end of stream).
    fn read_available(&mut self, space: usize) -> io::Result<usize> {
        let spare = &mut self.read_buf.spare_capacity_mut()[..space];
        // SAFETY: the spare capacity is writable for `space` bytes.
        let n = unsafe { recv_into(&self.socket, spare.as_mut_ptr().cast(), space) }?;
        // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
        unsafe { self.read_buf.set_len(self.read_buf.len() + n) };
        Ok(n)
    }

    /// Refuses the value arriving into the landing, for `e` (it could not hold more): as a value
    /// arriving in the buffer is refused (`process_buffer`), the request's line goes, the rest of its
    /// block is swallowed, a `set` or `ms` removes the item it would have replaced, and the error
    /// line is sent unless the request said noreply.
    fn refuse_landing(&mut self, e: StoreError) {
        let Some(landing) = self.landing.take() else {
            return;
        };
        let left = landing.len() - landing.filled() + 2;
        drop(landing);
        let Parsed::IncompleteData {
            line_len,
            noreply,
            unlinks,
            ..
        } = parse_request(&self.read_buf, &self.limits)
        else {
            unreachable!("a landing's request line heads the read buffer");
        };
        self.unlink(unlinks);
        self.session.counters.protocol_errors += 1;
        if !noreply {
            self.write_buf.extend_from_slice(no_room_reply(&e));
        }
        self.read_buf.advance(line_len);
        self.swallow = Swallow::Bytes(left);
    }

    /// Starts reading the data block of the request whose line is the head of the read buffer (of
    /// `line_len` bytes) into `landing`: what has arrived of it moves there, and what follows it in
    /// the buffer (part of its `\r\n`) moves up behind the line.
    fn start_landing(&mut self, mut landing: Landing<'n>, line_len: usize) {
        let taken = landing.write(&self.read_buf[line_len..]);
        let end = self.read_buf.len();
        self.read_buf.copy_within(line_len + taken..end, line_len);
        self.read_buf.truncate(end - taken);
        self.landing = Some(landing);
    }

    /// Removes the item a refused `set` or `ms` would have replaced (`unlinks` of
    /// [`Parsed::Error`] and [`Parsed::IncompleteData`]), as memcached 1.6 does ("avoid stale data
    /// persisting in cache because we failed alloc"): a client whose new value was refused must not
    /// go on reading the old one.
    fn unlink(&self, unlinks: Option<(&[u8], bool)>) {
        if let Some((key, base64)) = unlinks {
            let mut decoded = [0u8; MAX_KEY_LEN];
            if let Some(key) = decode_key(key, base64, &mut decoded) {
                self.store.with_entry(key, |e| e.remove());
            }
        }
    }

    /// Handles the complete requests in the read buffer, appending replies to the write buffer. Stops early
    /// (returning `more = true`) once the replies reach [`MAX_BATCH_REPLY_BYTES`], so a pipeline of gets
    /// for large values cannot pile up unbounded replies in memory; a single multi-get over the bound
    /// stops mid-request ([`Flow::Unfinished`]) and stays in the buffer to be carried on.
    fn process_buffer(&mut self) -> (Flow, bool) {
        if let Some(landing) = self.landing.as_mut().filter(|l| !l.is_full()) {
            // The head request's data block is still arriving, into its landing: once what is held
            // is written, hold more, as for a block arriving in the buffer.
            if landing.unfilled().1 == 0 {
                let (filled, len) = (landing.filled(), landing.len());
                if let Err(e) = landing.grow_to(buffered_ahead(filled, len)) {
                    self.refuse_landing(e);
                }
            }
            return (Flow::Continue, false);
        }
        let mut pos = 0;
        let mut flow = Flow::Continue;
        let mut more = false;
        // A large value's memory to read the head request's data into, once its line is in.
        let mut new_landing = None;
        let buf = &self.read_buf[..];
        while pos < buf.len() {
            match self.swallow {
                Swallow::Nothing => {}
                Swallow::Bytes(n) => {
                    let take = n.min(buf.len() - pos);
                    pos += take;
                    self.swallow = if take == n {
                        Swallow::Nothing
                    } else {
                        Swallow::Bytes(n - take)
                    };
                    continue;
                }
                Swallow::ThroughNewline => {
                    match memchr::memchr(b'\n', &buf[pos..]) {
                        Some(i) => {
                            pos += i + 1;
                            self.swallow = Swallow::Nothing;
                        }
                        None => pos = buf.len(),
                    }
                    continue;
                }
            }
            // A landing holds the head request's data block, read there (`start_landing`); the
            // buffer holds its line and then the block's `\r\n`.
            let parsed = match (&self.landing, self.long_get) {
                (Some(landing), _) => {
                    parse_landed_request(&buf[pos..], landing.value(), &self.limits)
                }
                (None, Some(line)) => parse_long_get_rest(&buf[pos..], line, &self.limits),
                (None, None) => parse_request(&buf[pos..], &self.limits),
            };
            if !matches!(parsed, Parsed::IncompleteData { .. }) {
                // The request the room was held for is in (or was refused): give the room back before
                // it runs, so its insert can use it.
                self.reservation = None;
                self.read_at_most = usize::MAX;
            }
            match parsed {
                Parsed::Incomplete => break,
                Parsed::IncompleteData {
                    key,
                    line_len,
                    data_len,
                    flags,
                    noreply,
                    unlinks,
                } => {
                    if data_len <= RESERVE_DATA_ABOVE_BYTES || self.landing.is_some() {
                        break;
                    }
                    // The block and its `\r\n`: the room ahead covers both, so a read limited to it
                    // is never empty while the request is incomplete.
                    let block = data_len + 2;
                    let arrived = buf.len() - pos - line_len;
                    let ahead = buffered_ahead(arrived, block);
                    let hold = ahead.saturating_sub(BUFFER_BYTES);
                    let held = match &mut self.reservation {
                        Some(held) => held.grow_to(hold),
                        None => {
                            // Held in the shard of the key the item will have (an `ms` key may
                            // be sent in base64).
                            let mut decoded = [0u8; MAX_KEY_LEN];
                            let key = match unlinks {
                                Some((sent, base64)) => {
                                    decode_key(sent, base64, &mut decoded).unwrap_or(key)
                                }
                                None => key,
                            };
                            // Straight into the item's own memory if it gets a mapping of its own;
                            // else into the buffer, with room held for it.
                            match self.store.land(key, data_len, flags, BUFFER_BYTES) {
                                Ok(Some(mut landing)) => {
                                    match landing.grow_to(buffered_ahead(arrived, data_len)) {
                                        Ok(()) => {
                                            new_landing = Some((landing, line_len));
                                            break;
                                        }
                                        Err(e) => Err(e),
                                    }
                                }
                                Ok(None) => self.store.reserve(key, block, hold).map(|held| {
                                    self.reservation = Some(held);
                                }),
                                Err(e) => Err(e),
                            }
                        }
                    };
                    match held {
                        Ok(()) => {
                            self.read_at_most = ahead - arrived;
                            break;
                        }
                        Err(e) => {
                            // Given back now: the swallow below may take many reads.
                            self.reservation = None;
                            self.read_at_most = usize::MAX;
                            // memcached's answer when it cannot allocate the item: refuse it and swallow
                            // its data block, so the connection stays in sync; and a set or an ms
                            // removes the item it would have replaced.
                            self.unlink(unlinks);
                            pos += line_len;
                            self.session.counters.protocol_errors += 1;
                            if !noreply {
                                self.write_buf.extend_from_slice(no_room_reply(&e));
                            }
                            self.swallow = Swallow::Bytes(data_len + 2);
                        }
                    }
                }
                Parsed::GetLinePart {
                    line,
                    keys,
                    consumed,
                } => {
                    flow = self
                        .session
                        .execute_get_part(line, keys, &mut self.write_buf);
                    if flow == Flow::Unfinished {
                        more = true;
                        break;
                    }
                    self.long_get = Some(line);
                    pos += consumed;
                    if self.write_buf.len() >= MAX_BATCH_REPLY_BYTES {
                        more = true;
                        break;
                    }
                }
                Parsed::Request { request, consumed } => {
                    flow = self.session.execute(request, &mut self.write_buf);
                    // Its insert has taken the landing's memory, or it is given back.
                    self.landing = None;
                    if flow == Flow::Unfinished {
                        // Left in the buffer: parsed and executed again after the write, it resumes.
                        more = true;
                        break;
                    }
                    self.long_get = None;
                    pos += consumed;
                    if flow == Flow::Close {
                        break;
                    }
                    if self.write_buf.len() >= MAX_BATCH_REPLY_BYTES {
                        more = true;
                        break;
                    }
                }
                Parsed::Error {
                    error,
                    consumed,
                    swallow,
                    noreply,
                    unlinks,
                } => {
                    // As memcached: a set (or ms) refused as too large removes the item it would
                    // have replaced.
                    self.unlink(unlinks);
                    self.long_get = None;
                    pos += consumed;
                    self.session.counters.protocol_errors += 1;
                    if !noreply {
                        self.write_buf.extend_from_slice(error.reply());
                    }
                    self.swallow = swallow;
                    self.landing = None;
                }
            }
        }
        self.read_buf.advance(pos);
        if let Some((landing, line_len)) = new_landing {
            self.start_landing(landing, line_len);
        }
        (flow, more)
    }
}

/// memcached's answer to a value the store has no room for, arriving (`Store::reserve`, a landing)
/// or refused at its line: `object too large for cache` or `out of memory storing object`.
fn no_room_reply(e: &StoreError) -> &'static [u8] {
    match e {
        StoreError::TooLarge { .. } => ProtocolError::TooLarge.reply(),
        _ => reply::OUT_OF_MEMORY,
    }
}

/// Reads what `socket` holds, up to `space` bytes, to `to` (`Ok(0)` at end of stream).
///
/// A read that does not fill `space` drained the socket, so the socket's read readiness is dropped here
/// instead of paying another read syscall that returns EAGAIN (memcached skips it the same way). It must
/// be dropped inside the same `try_io` as the read: tokio then clears only the readiness it saw *before*
/// the read, and data arriving after the read raises a newer event that survives. (Clearing it later,
/// after the replies were written, lost requests that arrived while a write was blocked, or, on a
/// multi-threaded runtime, at any time: the connection then waited forever.)
///
/// # Safety
/// `to` must be valid for writes of `space` bytes.
unsafe fn recv_into(socket: &TcpStream, to: *mut u8, space: usize) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    let mut got = 0;
    let result = socket.try_io(tokio::io::Interest::READABLE, || {
        let n = loop {
            // SAFETY: the caller lets recv write `space` bytes at `to`.
            let n = unsafe { libc::recv(fd, to.cast(), space, 0) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        got = n;
        if n > 0 && n < space {
            // Drained: report WouldBlock so tokio clears the readiness; the bytes are counted above.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Makes room in a reply buffer for `additional` more bytes: a reply that takes it past
/// [`MAX_KEPT_BUFFER_BYTES`] (a large value) goes into this thread's kept large buffer when there
/// is one, instead of a fresh allocation faulted in page by page and freed after the write (1 MB
/// gets ran at about 0.2 of memcached's rate, which sends from the item; session 34). Without one
/// that fits, the buffer grows to all of it at once, so that kept afterwards it fits the next reply of
/// that size. (Grown by the reply's pieces instead, it came out a few bytes short of the room asked
/// for here, and each 1 MB get mapped, faulted in and unmapped a buffer of its own once no large set
/// had left a larger one: 512 gets/s against 867, session 36.)
pub(crate) fn reserve_reply(out: &mut BytesMut, additional: usize) {
    if out.capacity() - out.len() >= additional || out.len() + additional <= MAX_KEPT_BUFFER_BYTES {
        return;
    }
    match idle_buffers::take_large(out.len() + additional) {
        Some(mut large) => {
            large.extend_from_slice(out);
            let small = std::mem::replace(out, large);
            idle_buffers::give(small, false);
        }
        None => out.reserve(additional),
    }
}

/// This thread's kept large buffer, if it has one, for use within one request (an append's copy
/// of the old value); [`give_large_buffer`] takes it back.
pub(crate) fn take_large_buffer() -> Option<BytesMut> {
    idle_buffers::take_large(0)
}

/// Takes back a buffer a large value grew: kept as this thread's large buffer within its bound
/// (the largest so far), freed otherwise.
pub(crate) fn give_large_buffer(buf: BytesMut) {
    idle_buffers::give(buf, true);
}

/// Connection buffers not in use, kept per thread for the next connection that has something to read, so
/// that idle connections hold no buffers and a busy one does not pay an allocation per request.
mod idle_buffers {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::{BUFFER_BYTES, MAX_KEPT_BUFFER_BYTES};

    /// Buffers kept per thread (1 MiB at 16 KiB each); more go back to the allocator. Enough for 32
    /// connections per thread that each hold both buffers while busy; bounded so that `-t 64` keeps at
    /// most 64 MiB idle.
    const MAX_KEPT: usize = 64;

    /// The largest buffer kept per thread for large values ([`take_large`]).
    const MAX_KEPT_LARGE_BYTES: usize = 2 << 20;

    thread_local! {
        static KEPT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
        /// One buffer that grew for a large value, kept for the next one read, replied or copied
        /// for an append on this thread: a fresh one per value, faulted in page by page, was much
        /// of why 1 MB sets ran at 0.47 of memcached's rate (memcached reads a value into its
        /// item), 1 MB gets at 0.25 and appends to a growing value 10x slower.
        /// At most [`MAX_KEPT_LARGE_BYTES`] per thread, outside the memory limit as all buffers.
        static LARGE: RefCell<Option<BytesMut>> = const { RefCell::new(None) };
    }

    /// This thread's kept large buffer, empty, if it has room for `want` bytes.
    pub(super) fn take_large(want: usize) -> Option<BytesMut> {
        LARGE.with(|large| {
            let mut large = large.borrow_mut();
            if large.as_ref()?.capacity() >= want {
                large.take()
            } else {
                None
            }
        })
    }

    /// An empty buffer with room for at least [`BUFFER_BYTES`].
    pub(super) fn take() -> BytesMut {
        let mut buf = KEPT
            .with(|kept| kept.borrow_mut().pop())
            .unwrap_or_default();
        // A kept buffer that was advanced through gets its whole allocation back here, without copying.
        buf.reserve(BUFFER_BYTES);
        buf
    }

    /// Takes back an empty buffer. One that grew past [`MAX_KEPT_BUFFER_BYTES`] (`grown`: its capacity
    /// may no longer show it once consumed from the front) is kept as this thread's large buffer if
    /// it is the largest so far within [`MAX_KEPT_LARGE_BYTES`], else freed.
    pub(super) fn give(mut buf: BytesMut, grown: bool) {
        if grown || buf.capacity() > MAX_KEPT_BUFFER_BYTES {
            // Emptied, a buffer consumed from the front gets its whole allocation back in place.
            buf.clear();
            buf.reserve(BUFFER_BYTES);
            if buf.capacity() <= MAX_KEPT_LARGE_BYTES {
                LARGE.with(|large| {
                    let mut large = large.borrow_mut();
                    if large
                        .as_ref()
                        .is_none_or(|kept| kept.capacity() < buf.capacity())
                    {
                        *large = Some(buf);
                    }
                });
            }
            return;
        }
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() < MAX_KEPT {
                kept.push(buf);
            }
        });
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// One grown buffer per thread is kept for the next large value, within its bound; a
        /// larger one is freed, and a request for more room than the kept one has gets nothing.
        #[test]
        fn one_large_buffer_is_kept_per_thread_within_its_bound() {
            assert!(take_large(1).is_none(), "nothing kept yet");
            let mut grown = BytesMut::with_capacity(1 << 20);
            grown.extend_from_slice(&[7; 1000]);
            give(grown, true);
            assert!(take_large(4 << 20).is_none(), "too small for that");
            let kept = take_large(512 << 10).expect("kept");
            assert!(kept.is_empty() && kept.capacity() >= 1 << 20);
            assert!(take_large(1).is_none(), "taken");
            give(BytesMut::with_capacity(MAX_KEPT_LARGE_BYTES + 1), true);
            assert!(take_large(1).is_none(), "over the bound: freed");
        }
    }
}

/// Rate limit for the log line of a failed `accept`: out of file descriptors, accept fails every
/// 10 ms (the back-off) for as long as that lasts, and a line each time filled the log without bound
/// (found in session 31: 2,197 lines in 25 s).
#[derive(Default)]
struct AcceptFailures {
    /// When a failure was last logged.
    last_logged: Option<Instant>,
    /// Failures since then that were not.
    unlogged: u64,
}

impl AcceptFailures {
    /// At most one line per this long.
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Counts a failure at `now`; `Some(failures not logged before it)` when this one is to be logged.
    fn note(&mut self, now: Instant) -> Option<u64> {
        if self
            .last_logged
            .is_some_and(|at| now.saturating_duration_since(at) < Self::LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::{effective_shards, idle_buffers, reserve_reply, AcceptFailures, ServerConfig};
    use crate::maintainer::{self, default_busy_sleep};
    use std::time::{Duration, Instant};

    /// A large reply grows its buffer to all of the room asked for at once, so that buffer, kept
    /// once the reply is out, serves the next reply of that size: a thread serving 1 MB gets, with no
    /// large set before them to leave it a larger buffer, allocates one once. Before session 36 the
    /// buffer grew by the reply's pieces, came out short of the room asked for, and every such get
    /// mapped and unmapped one of its own (this test fails at the second reply).
    #[test]
    fn a_large_reply_leaves_a_buffer_the_next_one_fits() {
        let value = vec![7u8; 1_000_000];
        let mut previous: Option<*const u8> = None;
        for round in 0..3 {
            let mut out = idle_buffers::take();
            // A get's reply as `commands.rs` makes it.
            reserve_reply(&mut out, 1 + value.len() + 64);
            if let Some(previous) = previous {
                assert_eq!(out.as_ptr(), previous, "round {round}: a buffer of its own");
            }
            crate::protocol::compose_value(&mut out, b"k", 0, &[&value], None);
            out.extend_from_slice(b"END\r\n");
            previous = Some(out.as_ptr());
            out.clear();
            idle_buffers::give(out, false);
        }
        drop(idle_buffers::take_large(0));
    }

    /// Out of file descriptors, accept fails every 10 ms: 25 s of that logs 3 lines (at 0, 10 and
    /// 20 s), each naming the failures left out before it, not 2,500.
    #[test]
    fn failed_accepts_are_logged_once_per_ten_seconds() {
        let start = Instant::now();
        let mut failures = AcceptFailures::default();
        let logged: Vec<(u64, u64)> = (0..2500u64)
            .filter_map(|i| {
                let at_ms = i * 10;
                failures
                    .note(start + Duration::from_millis(at_ms))
                    .map(|unlogged| (at_ms, unlogged))
            })
            .collect();
        assert_eq!(logged, [(0, 0), (10_000, 999), (20_000, 999)]);
    }

    const MIB: usize = 1 << 20;

    /// The shard count keeps the largest item within a quarter of a shard, gives each shard at least
    /// 16 MiB while there are four shards per thread, and never exceeds what was asked for.
    #[test]
    fn shards_are_as_many_as_useful() {
        // Each shard at least 16 MiB: 343 MiB at -t 4 gets 16 shards, not 64 of 5.4 MiB.
        assert_eq!(effective_shards(64, 343 * MIB, MIB, 4), 16);
        assert_eq!(effective_shards(64, 256 * MIB, MIB, 2), 16);
        assert_eq!(effective_shards(64, 4096 * MIB, MIB, 4), 64);
        // Four shards per thread even below 16 MiB each, as long as the largest item fits.
        assert_eq!(effective_shards(64, 128 * MIB, MIB, 4), 16);
        assert_eq!(effective_shards(64, 343 * MIB, MIB, 32), 64);
        // The largest item bounds it first: -m 64 -I 1m gives 8 shards, -m 8 one.
        assert_eq!(effective_shards(64, 64 * MIB, MIB, 4), 8);
        assert_eq!(effective_shards(64, 64 * MIB, 64 << 10, 4), 16);
        assert_eq!(effective_shards(64, 8 * MIB, MIB, 4), 1);
        // Never more than asked for, never none.
        assert_eq!(effective_shards(4, 4096 * MIB, MIB, 4), 4);
        assert_eq!(effective_shards(0, 4096 * MIB, MIB, 0), 1);
    }

    /// A library user who sets only the workers gets the spacing the binary would choose for them; one
    /// who sets the spacing keeps it.
    #[test]
    fn the_maintainer_spacing_follows_the_workers_unless_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let with = |threads, connection_threads| ServerConfig {
            threads,
            connection_threads,
            ..ServerConfig::default()
        };
        // More runtime workers than cores: half the spacing. Threads that own their connections,
        // however many: the owned spacing.
        let half = with(2 * cores, 0).effective_maintainer_busy_sleep();
        assert_eq!(half, default_busy_sleep() / 2);
        let owned = with(1, 2 * cores).effective_maintainer_busy_sleep();
        assert_eq!(owned, maintainer::OWNED_BUSY_SLEEP);
        assert_eq!(with(cores, cores).effective_maintainer_busy_sleep(), owned);
        assert_eq!(
            with(cores, 0).effective_maintainer_busy_sleep(),
            default_busy_sleep()
        );
        let set = ServerConfig {
            maintainer_busy_sleep: Some(Duration::from_micros(700)),
            ..with(2 * cores, 0)
        };
        assert_eq!(
            set.effective_maintainer_busy_sleep(),
            Duration::from_micros(700)
        );
    }
}
