//! Memory benchmark: resident bytes per stored item beyond key and value, our store against
//! memcached (Debian's `/usr/bin/memcached`, run as a child process on a free loopback port and
//! filled over TCP with the same items) and moka 0.12, all measured in this run.
//!
//! `cargo bench -p cache-node --bench memory` (env: `REPEAT`, default 3; `MEMCACHED`, default
//! `/usr/bin/memcached`; `SCALE` divides the item counts, for a quick run).
//!
//! Workloads: 2,000,000 items of 32-byte keys and 100-byte values; 1,000,000 items of 50-byte
//! keys and 1,024-byte values. Budgets are large enough that nothing is evicted. Overhead per
//! item = (RSS after filling - RSS before) / items - (key + value).
//!
//! Then the same per stored item in a cache that evicts (ours and memcached): a budget of
//! items x (key + value + 48) bytes (what the items would take at the 48-byte target) and 1.5 x
//! items distinct keys stored into it, so the figure includes what only an evicting cache holds
//! (our ghost lists, memcached's slab slack) and any budget the cache leaves unfilled counts
//! against it.
//!
//! Last, values of mixed sizes (uniform in 100-2,000 and 100-10,000 bytes, 32-byte keys, a size
//! fixed per key): 1.5 x as many keys as would fit are stored into 343 MiB, ours (with the shards
//! the server gives `-m 343` at its default `-t 4`; `MIXED_SHARDS` overrides) and memcached
//! `-m 343`, and the items each keeps are compared, and the bytes of key and value they hold (a
//! cache that keeps more items may keep smaller ones).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cache_node::clock::SystemClock;
use cache_node::protocol::{Limits, Request};
use cache_node::server::effective_shards;
use cache_node::store::{NewItem, Store, StoreConfig};

fn rss_kib(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&path).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn key(i: usize, len: usize) -> Vec<u8> {
    let mut k = format!("k{i:0>width$}", width = len - 1).into_bytes();
    k.truncate(len);
    k
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect()
}

struct Workload {
    name: &'static str,
    items: usize,
    key_len: usize,
    value_len: usize,
}

fn overhead(rss_before_kib: u64, rss_after_kib: u64, items: usize, w: &Workload) -> f64 {
    let grown = (rss_after_kib.saturating_sub(rss_before_kib) * 1024) as f64;
    grown / items as f64 - (w.key_len + w.value_len) as f64
}

/// Whether a measurement stores every item in a budget that holds them all, or 1.5 x as many
/// into a budget of items x (key + value + 48 bytes), evicting.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    NoEviction,
    Evicting,
}

impl Fill {
    fn budget_bytes(self, w: &Workload) -> usize {
        match self {
            Fill::NoEviction => 64 << 30,
            Fill::Evicting => w.items * (w.key_len + w.value_len + 48),
        }
    }

    fn keys(self, w: &Workload) -> usize {
        match self {
            Fill::NoEviction => w.items,
            Fill::Evicting => w.items * 3 / 2,
        }
    }

    /// Checks the eviction counters and returns the items the overhead is divided by.
    fn check(self, w: &Workload, items: usize, evictions: u64, who: &str) -> usize {
        match self {
            Fill::NoEviction => {
                assert_eq!(items, w.items, "{who} must hold every item");
                assert_eq!(evictions, 0, "{who} evicted");
            }
            Fill::Evicting => assert!(evictions > 0, "{who} did not evict"),
        }
        items
    }
}

/// Our store: (overhead by RSS, overhead by the store's own accounting, items kept), per stored
/// item.
fn measure_store(w: &Workload, fill: Fill) -> (f64, f64, usize) {
    let before = rss_kib(None);
    let store = Store::new(
        StoreConfig {
            memory_limit_bytes: fill.budget_bytes(w),
            ..StoreConfig::default()
        },
        Arc::new(SystemClock::new()),
    );
    let v = value(0, w.value_len);
    for i in 0..fill.keys(w) {
        store
            .with_entry(&key(i, w.key_len), |e| e.insert(NewItem::plain(&[&v])))
            .expect("insert");
    }
    let after = rss_kib(None);
    let stats = store.stats();
    let items = fill.check(w, stats.curr_items as usize, stats.evictions, "the store");
    let accounted = stats.bytes as f64 / items as f64 - (w.key_len + w.value_len) as f64;
    let per = |b: u64| b as f64 / items as f64;
    eprintln!(
        "  store {}{}: {items} items; per item arena {:.1} (incl. key+value {}), index {:.1}, sketch+ghosts {:.1}",
        w.name,
        if fill == Fill::Evicting { ", evicting" } else { "" },
        per(stats.arena_bytes),
        w.key_len + w.value_len,
        per(stats.index_bytes),
        per(stats.policy_bytes)
    );
    drop(store);
    (overhead(before, after, items, w), accounted, items)
}

fn measure_moka(w: &Workload) -> f64 {
    let before = rss_kib(None);
    let cache: moka::sync::Cache<Vec<u8>, Vec<u8>> = moka::sync::Cache::new(u64::MAX);
    for i in 0..w.items {
        cache.insert(key(i, w.key_len), value(0, w.value_len));
    }
    cache.run_pending_tasks();
    let after = rss_kib(None);
    assert_eq!(cache.entry_count() as usize, w.items);
    drop(cache);
    overhead(before, after, w.items, w)
}

struct Memcached {
    child: Child,
    port: u16,
}

impl Memcached {
    fn start(bin: &str, memory_mb: usize) -> Memcached {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let memory_arg = memory_mb.to_string();
        let mut args = vec!["-l", "127.0.0.1", "-U", "0", "-m", &memory_arg, "-t", "2"];
        // memcached refuses to run as root unless told which user to be.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            args.extend(["-u", "root"]);
        }
        let port_arg = port.to_string();
        args.extend(["-p", &port_arg]);
        let child = Command::new(bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Memcached { child, port }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// memcached: (overhead by RSS per stored item, items kept).
fn measure_memcached(bin: &str, w: &Workload, fill: Fill) -> (f64, usize) {
    let memory_mb = match fill {
        Fill::NoEviction => 8192,
        Fill::Evicting => fill.budget_bytes(w).div_ceil(1 << 20),
    };
    let mc = Memcached::start(bin, memory_mb);
    let mut conn = TcpStream::connect(("127.0.0.1", mc.port)).expect("connect");
    // Let memcached finish its start-up allocations before the baseline.
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(Some(mc.child.id()));
    let v = value(0, w.value_len);
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    for batch in (0..fill.keys(w)).collect::<Vec<_>>().chunks(1000) {
        buf.clear();
        for &i in batch {
            Request::set(&key(i, w.key_len), &v, false).compose(&mut buf);
        }
        conn.write_all(&buf).expect("write");
        for _ in batch {
            line.clear();
            reader.read_line(&mut line).expect("reply");
            assert_eq!(line, "STORED\r\n", "memcached refused a set");
        }
    }
    conn.write_all(b"stats\r\n").expect("stats");
    let (items, evictions) = memcached_items_and_evictions(&mut reader);
    let items = fill.check(w, items, evictions, "memcached");
    let after = rss_kib(Some(mc.child.id()));
    let mut rest = Vec::new();
    let _ = conn.write_all(b"quit\r\n");
    let _ = reader.read_to_end(&mut rest);
    (overhead(before, after, items, w), items)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

/// Runs one in-process measurement in a fresh child process, so memory the allocator kept from
/// an earlier measurement cannot hide growth.
fn in_child(what: &str, w: usize) -> Vec<f64> {
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args(["--child", what, &w.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run child");
    assert!(out.status.success(), "child {what} failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().expect("child output"))
        .collect()
}

/// Value length of key `i` in a mixed-size workload: uniform in `min..=max`, fixed per key.
fn mixed_len(i: usize, min: usize, max: usize) -> usize {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    min + ((h >> 17) % (max - min + 1) as u64) as usize
}

const MIXED_KEY_LEN: usize = 32;
const MIXED_BUDGET_MB: usize = 343;

/// Keys a mixed-size fill stores: 1.5 x what the budget holds at the average size.
fn mixed_keys(min: usize, max: usize) -> usize {
    (MIXED_BUDGET_MB << 20) / (MIXED_KEY_LEN + (min + max) / 2) * 3 / 2
}

/// Shards our store gets for the mixed-size fill: what the server would use with `-m 343` and its
/// defaults (`--shards 64`, `-I 1m`, `-t 4`), unless `MIXED_SHARDS` says otherwise.
fn mixed_shards() -> usize {
    std::env::var("MIXED_SHARDS")
        .ok()
        .map(|v| v.parse().expect("MIXED_SHARDS: a shard count"))
        .unwrap_or_else(|| {
            effective_shards(
                64,
                MIXED_BUDGET_MB << 20,
                Limits::default().max_value_len,
                4,
            )
        })
}

/// Items our store keeps after a mixed-size fill, and their bytes of key and value.
fn mixed_store(min: usize, max: usize) -> (u64, u64) {
    let store = Store::new(
        StoreConfig {
            memory_limit_bytes: MIXED_BUDGET_MB << 20,
            shards: mixed_shards(),
            ..StoreConfig::default()
        },
        Arc::new(SystemClock::new()),
    );
    let v = value(0, max);
    for i in 0..mixed_keys(min, max) {
        let len = mixed_len(i, min, max);
        store
            .with_entry(&key(i, MIXED_KEY_LEN), |e| {
                e.insert(NewItem::plain(&[&v[..len]]))
            })
            .expect("insert");
    }
    let stats = store.stats();
    assert!(stats.evictions > 0, "the store did not evict");
    let data: u64 = (0..mixed_keys(min, max))
        .map(|i| {
            let key = key(i, MIXED_KEY_LEN);
            store.with_entry(&key, |e| {
                e.item()
                    .map_or(0, |item| (key.len() + item.value().len()) as u64)
            })
        })
        .sum();
    (stats.curr_items, data)
}

/// Items memcached keeps after the same fill, over TCP with `noreply` sets, and their bytes of key
/// and value (asked key by key with `mg KEY s`, which answers the value's size or `EN`).
fn mixed_memcached(bin: &str, min: usize, max: usize) -> (u64, u64) {
    let mc = Memcached::start(bin, MIXED_BUDGET_MB);
    let mut conn = TcpStream::connect(("127.0.0.1", mc.port)).expect("connect");
    let v = value(0, max);
    let mut buf = BytesMut::with_capacity(4 << 20);
    let keys = mixed_keys(min, max);
    for i in 0..keys {
        let len = mixed_len(i, min, max);
        Request::set(&key(i, MIXED_KEY_LEN), &v[..len], true).compose(&mut buf);
        if buf.len() > (2 << 20) || i + 1 == keys {
            conn.write_all(&buf).expect("write");
            buf.clear();
        }
    }
    conn.write_all(b"stats\r\n").expect("stats");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let (items, evictions) = memcached_items_and_evictions(&mut reader);
    assert!(evictions > 0, "memcached did not evict");
    let (mut data, mut found, mut line) = (0u64, 0u64, String::new());
    for batch in (0..keys).collect::<Vec<_>>().chunks(10_000) {
        for &i in batch {
            buf.extend_from_slice(b"mg ");
            buf.extend_from_slice(&key(i, MIXED_KEY_LEN));
            buf.extend_from_slice(b" s\r\n");
        }
        conn.write_all(&buf).expect("write");
        buf.clear();
        for _ in batch {
            line.clear();
            reader.read_line(&mut line).expect("mg reply");
            if let Some(size) = line.trim_end().strip_prefix("HD s") {
                data += (MIXED_KEY_LEN + size.parse::<usize>().expect("size")) as u64;
                found += 1;
            } else {
                assert_eq!(line, "EN\r\n", "mg reply");
            }
        }
    }
    assert_eq!(found, items as u64, "every counted item answers mg");
    (items as u64, data)
}

/// Reads a `stats` reply up to `END`: (curr_items, evictions). Any line before it that is not a
/// `STAT` line is an error memcached sent for an earlier request (a `noreply` set still gets
/// one), and fails the measurement.
fn memcached_items_and_evictions(reader: &mut impl BufRead) -> (usize, u64) {
    let (mut line, mut items, mut evictions) = (String::new(), 0, 0);
    loop {
        line.clear();
        reader.read_line(&mut line).expect("stats reply");
        if line.starts_with("END") {
            return (items, evictions);
        }
        assert!(
            line.starts_with("STAT "),
            "memcached refused a request: {line}"
        );
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.get(1).copied() {
            Some("curr_items") => items = f[2].parse().expect("n"),
            Some("evictions") => evictions = f[2].parse().expect("n"),
            _ => {}
        }
    }
}

fn main() {
    let repeat: usize = std::env::var("REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let scale: usize = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let bin = std::env::var("MEMCACHED").unwrap_or_else(|_| "/usr/bin/memcached".to_string());
    let workloads = [
        Workload {
            name: "32B keys / 100B values",
            items: 2_000_000 / scale,
            key_len: 32,
            value_len: 100,
        },
        Workload {
            name: "50B keys / 1KiB values",
            items: 1_000_000 / scale,
            key_len: 50,
            value_len: 1024,
        },
    ];
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let w = &workloads[args[pos + 2].parse::<usize>().expect("workload")];
        match args[pos + 1].as_str() {
            "store" => {
                let (o, a, items) = measure_store(w, Fill::NoEviction);
                println!("{o} {a} {items}");
            }
            "store-evicting" => {
                let (o, a, items) = measure_store(w, Fill::Evicting);
                println!("{o} {a} {items}");
            }
            "moka" => println!("{}", measure_moka(w)),
            other => panic!("unknown child {other}"),
        }
        return;
    }
    println!(
        "bytes of RSS per item beyond key+value (median of {repeat} runs, each in a fresh process)"
    );
    println!(
        "{:<24} {:>9} {:>10} {:>12} {:>10} {:>8} {:>12}",
        "workload", "items", "ours", "ours(acct)", "memcached", "moka", "ours/memc"
    );
    for (wi, w) in workloads.iter().enumerate() {
        let mut ours = Vec::new();
        let mut acct = Vec::new();
        let mut memc = Vec::new();
        let mut moka = Vec::new();
        for _ in 0..repeat {
            let r = in_child("store", wi);
            ours.push(r[0]);
            acct.push(r[1]);
            memc.push(measure_memcached(&bin, w, Fill::NoEviction).0);
            moka.push(in_child("moka", wi)[0]);
        }
        let (o, a, m, k) = (median(ours), median(acct), median(memc), median(moka));
        println!(
            "{:<24} {:>9} {:>10.1} {:>12.1} {:>10.1} {:>8.1} {:>12.2}",
            w.name,
            w.items,
            o,
            a,
            m,
            k,
            o / m
        );
    }
    println!(
        "\nsame, per stored item, in a cache that evicts: 1.5 x items keys into a budget of items x (key + value + 48) bytes"
    );
    println!(
        "{:<24} {:>9} {:>10} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "workload",
        "budget MB",
        "ours",
        "ours(acct)",
        "memcached",
        "ours/memc",
        "ours items",
        "memc items"
    );
    for (wi, w) in workloads.iter().enumerate() {
        let (mut ours, mut acct, mut memc) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ours_items, mut memc_items) = (0, 0);
        for _ in 0..repeat {
            let r = in_child("store-evicting", wi);
            ours.push(r[0]);
            acct.push(r[1]);
            ours_items = r[2] as usize;
            let (m, items) = measure_memcached(&bin, w, Fill::Evicting);
            memc.push(m);
            memc_items = items;
        }
        let (o, a, m) = (median(ours), median(acct), median(memc));
        println!(
            "{:<24} {:>9} {:>10.1} {:>12.1} {:>10.1} {:>12.2} {:>10} {:>12}",
            w.name,
            Fill::Evicting.budget_bytes(w) >> 20,
            o,
            a,
            m,
            o / m,
            ours_items,
            memc_items
        );
    }
    println!(
        "\nmixed value sizes, 32 B keys: 1.5 x what fits stored into {MIXED_BUDGET_MB} MiB \
         (ours in {} shards); items kept, and MiB of keys and values kept",
        mixed_shards()
    );
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>10} {:>9} {:>9} {:>10}",
        "values", "keys", "ours", "memcached", "ours/memc", "ours MiB", "memc MiB", "ours/memc"
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    for (min, max) in [(100, 2_000), (100, 10_000)] {
        let (ours, ours_data) = mixed_store(min, max);
        let (memc, memc_data) = mixed_memcached(&bin, min, max);
        println!(
            "{:<16} {:>9} {:>10} {:>10} {:>10.2} {:>9.1} {:>9.1} {:>10.2}",
            format!("{min}-{max} B"),
            mixed_keys(min, max),
            ours,
            memc,
            ours as f64 / memc as f64,
            mib(ours_data),
            mib(memc_data),
            ours_data as f64 / memc_data as f64
        );
    }
}
