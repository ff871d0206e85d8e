//! cache-node against real memcached clients, used unchanged, over loopback (server on port 0):
//! - libmemcached's `memcapable -a`, the C library's own ASCII protocol conformance check (Debian ships it
//!   as `memccapable` in libmemcached-tools), and its key lister `memcdump`;
//! - pymemcache (Debian's python3-pymemcache), whose storage commands default to noreply
//!   (`tests/clients/pymemcache_client.py`, checked against memcached too);
//! - pylibmc (Debian's python3-pylibmc: libmemcached the library, with four behaviour sets, pipelined
//!   `no_block` writes among them), whose results must equal memcached's (`tests/clients/pylibmc_probe.py`);
//! - async-memcached (Shopify's Rust client), text and meta protocol, leases included.
//!
//! `scripts/setup` installs memcached and the clients other than async-memcached; without them these tests
//! fail and say so. What they do not cover: the binary protocol (cache-node speaks text and meta only) and
//! UDP.

mod common;

use std::time::Duration;

use async_memcached::{AsciiProtocol, Client, MetaProtocol};
use common::{Memcached, TestServer};

type R = Result<(), Box<dyn std::error::Error>>;

/// Runs an external client to completion (bounded) and returns its combined output, or panics saying how
/// to install it.
async fn run_client(program: &str, args: &[&str], install_hint: &str) -> (bool, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(60), child).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => panic!("cannot run {program} ({e}): {install_hint}"),
        Err(_) => panic!("{program} did not finish within 60 s"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmemcached_memcapable_ascii_passes() -> R {
    let s = TestServer::start().await;
    // libmemcached 1.1 (awesomized) installs it as memccapable; older packages as memcapable.
    let program = ["memccapable", "memcapable"]
        .into_iter()
        .find(|p| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|dir| dir.join(p).is_file())
        })
        .expect("memcapable not found: run scripts/setup (Debian package libmemcached-tools)");
    let port = s.addr.port().to_string();
    let args = ["-h", "127.0.0.1", "-p", &port, "-a", "-t", "5"];
    let (ok, out) = run_client(program, &args, "run scripts/setup").await;
    assert!(
        ok && out.contains("All tests passed"),
        "memcapable -a failed:\n{out}"
    );
    assert_eq!(out.matches("[pass]").count(), 27, "{out}");
    s.stop().await;
    Ok(())
}

/// libmemcached's `memcdump` lists every key (through `stats items` and `stats cachedump`), placeholders
/// left out, also when the values have 200 sizes from 100 B to 20 kB, one above half a page
/// (600 kB) and one of 1 byte. Before session 32 cachedump answered `ERROR` and memcdump failed
/// ("Failed to dump keys"); before session 34 `stats items` numbered each chunk size in use, up to
/// 255 of them, and memcdump (which asks about ids 1 to 63 only) listed 63 of such 200 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmemcached_memcdump_lists_the_keys() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let mut sizes: Vec<(String, usize)> = (1..=200).map(|i| (format!("k{i}"), i * 100)).collect();
    sizes.extend([("alpha".into(), 1), ("huge".into(), 600_000)]);
    for (key, len) in &sizes {
        c.expect(&common::set_request(key, *len), b"STORED\r\n")
            .await;
    }
    c.expect(b"mg lease N30\r\n", b"HD W\r\n").await;
    let servers = format!("--servers=127.0.0.1:{}", s.addr.port());
    let hint = "run scripts/setup (Debian package libmemcached-tools)";
    let (ok, out) = run_client("memcdump", &[&servers], hint).await;
    assert!(ok, "memcdump failed:\n{out}");
    let mut keys: Vec<&str> = out.lines().collect();
    keys.sort();
    let mut want: Vec<&str> = sizes.iter().map(|(key, _)| key.as_str()).collect();
    want.sort();
    assert_eq!(keys, want, "{} of {} keys listed", keys.len(), want.len());
    s.stop().await;
    Ok(())
}

/// memcached's own `memcached-tool HOST dump` and `HOST keys` (which read `lru_crawler metadump all`,
/// then `get` each key) give what they give against memcached for the same items: 300 keys, some
/// with client flags, an absolute expiry, or bytes the metadump URL-encodes. Before session 34
/// cache-node answered `ERROR` to the metadump and memcached-tool waited for its END forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_tool_dump_and_keys_match_memcacheds() -> R {
    const TOOL: &str = "/usr/share/memcached/scripts/memcached-tool";
    let hint = "run scripts/setup (Debian packages memcached and perl)";
    let mut requests = Vec::new();
    for i in 0..300 {
        let key = match i % 3 {
            0 => format!("plain{i}"),
            1 => format!("odd%{i}\u{e9}:/+"),
            _ => format!("k{i}"),
        };
        let (flags, exptime) = if i % 5 == 0 {
            (i, 2_000_000_000)
        } else {
            (0, 0)
        };
        let value = format!("{i}").repeat(i % 40 + 1);
        requests.extend_from_slice(
            format!("set {key} {flags} {exptime} {}\r\n{value}\r\n", value.len()).as_bytes(),
        );
    }
    // The dump's `add` records, sorted (memcached-tool prints them in Perl's hash order).
    let dump = async |port: u16| -> Vec<String> {
        let host = format!("127.0.0.1:{port}");
        let (ok, out) = run_client("perl", &[TOOL, &host, "dump"], hint).await;
        assert!(ok, "memcached-tool dump failed:\n{out}");
        // stdout's records, then stderr's "Dumping memcache contents" line.
        let lines: Vec<&str> = out
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with("Dumping memcache contents"))
            .collect();
        let mut records: Vec<String> = lines.chunks(2).map(|pair| pair.join(" | ")).collect();
        records.sort();
        records
    };
    let keys = async |port: u16| -> Vec<String> {
        let host = format!("127.0.0.1:{port}");
        let (ok, out) = run_client("perl", &[TOOL, &host, "keys"], hint).await;
        assert!(ok, "memcached-tool keys failed:\n{out}");
        let mut keys: Vec<String> = out
            .lines()
            .filter_map(|l| Some(l.strip_prefix("key=")?.split(' ').next()?.to_string()))
            .collect();
        keys.sort();
        keys
    };
    let memcached = Memcached::start();
    let mut c = common::Client::connect(([127, 0, 0, 1], memcached.port).into()).await;
    c.send(&requests).await;
    c.expect_reply(&b"STORED\r\n".repeat(300)).await;
    let (want_dump, want_keys) = (dump(memcached.port).await, keys(memcached.port).await);
    assert_eq!(want_dump.len(), 300, "{:?}", want_dump.first());
    assert_eq!(want_keys.len(), 300, "{:?}", want_keys.first());

    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.send(&requests).await;
    c.expect_reply(&b"STORED\r\n".repeat(300)).await;
    assert_eq!(dump(s.addr.port()).await, want_dump);
    assert_eq!(keys(s.addr.port()).await, want_keys);
    s.stop().await;
    Ok(())
}

/// `memcached-tool HOST display` (its default mode, from `stats items` and `stats slabs`) shows the
/// classes in use and the evictions in each: after 8,000 sets of 1 KB into 2 MiB, the 1 KB
/// class's "Evicted" is the node's `evictions` and the 100-byte class, stored after the flood,
/// lost nothing. Before session 34 `stats items` had no `evicted`, and the column read 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_tool_display_shows_evictions_by_class() -> R {
    const TOOL: &str = "/usr/share/memcached/scripts/memcached-tool";
    let s = TestServer::start_with(|c| {
        c.memory_limit_bytes = 2 << 20;
        c.store_shards = 4;
    })
    .await;
    let mut c = s.client().await;
    c.send(&common::noreply_sets("flood:", 8000, &[b'v'; 1000]))
        .await;
    c.send(&common::noreply_sets("small:", 10, &[b's'; 100]))
        .await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    let evictions: u64 = c.stat("evictions").await.parse()?;
    assert!(evictions > 1000, "{evictions}");
    let host = format!("127.0.0.1:{}", s.addr.port());
    let hint = "run scripts/setup (Debian packages memcached and perl)";
    let (ok, out) = run_client("perl", &[TOOL, &host, "display"], hint).await;
    assert!(ok, "memcached-tool display failed:\n{out}");
    // `  #  Item_Size  Max_age   Pages   Count   Full?  Evicted Evict_Time OOM` rows.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let evicted_in = |size_kib: bool| -> u64 {
        rows.iter()
            .filter(|r| r[1].ends_with('K') == size_kib)
            .map(|r| r[6].parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(evicted_in(true), evictions, "{out}");
    assert_eq!(evicted_in(false), 0, "{out}");
    let small_count: u64 = rows
        .iter()
        .filter(|r| !r[1].ends_with('K'))
        .map(|r| r[4].parse::<u64>().unwrap())
        .sum();
    assert_eq!(small_count, 10, "{out}");
    s.stop().await;
    Ok(())
}

/// Runs one of the Python client scripts in `tests/clients` against `port` with Debian's interpreter (where
/// Debian's client packages are installed); fails saying what to install if `module` is missing.
async fn run_python_client(script: &str, module: &str, port: u16) -> (bool, String) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let hint = format!("run scripts/setup (Debian packages python3 and python3-{module})");
    let (ok, out) = run_client("/usr/bin/python3", &[&path, &port.to_string()], &hint).await;
    assert!(
        !out.contains(&format!("No module named '{module}'")),
        "{module} is not installed: {hint}"
    );
    (ok, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymemcache_client_works_unchanged() -> R {
    // The script's expectations are memcached's: check them there first.
    let memcached = Memcached::start();
    let (ok, out) = run_python_client("pymemcache_client.py", "pymemcache", memcached.port).await;
    assert!(
        ok && out.contains("pymemcache ok"),
        "against memcached:\n{out}"
    );

    let s = TestServer::start().await;
    let (ok, out) = run_python_client("pymemcache_client.py", "pymemcache", s.addr.port()).await;
    assert!(
        ok && out.contains("pymemcache ok"),
        "against cache-node:\n{out}"
    );
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pylibmc_gets_memcacheds_results() -> R {
    let memcached = Memcached::start();
    let (ok, reference) = run_python_client("pylibmc_probe.py", "pylibmc", memcached.port).await;
    assert!(ok, "pylibmc probe against memcached:\n{reference}");
    let s = TestServer::start().await;
    let (ok, ours) = run_python_client("pylibmc_probe.py", "pylibmc", s.addr.port()).await;
    assert!(ok, "pylibmc probe against cache-node:\n{ours}");
    assert_eq!(reference.lines().count(), 4 * 37, "{reference}");
    for (want, got) in reference.lines().zip(ours.lines()) {
        assert_eq!(
            got, want,
            "pylibmc: cache-node (left) differs from memcached (right)"
        );
    }
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_memcached_text_protocol() -> R {
    let s = TestServer::start().await;
    let mut c = Client::new(format!("tcp://{}", s.addr)).await?;
    assert!(c.version().await?.starts_with("1.6"));
    c.flush_all().await?;

    c.set("a", "one", None, Some(7)).await?;
    let v = c.get("a").await?.expect("a is set");
    assert_eq!((v.data.as_deref(), v.flags), (Some(&b"one"[..]), Some(7)));
    assert!(
        c.add("a", "two", None, None).await.is_err(),
        "add of an existing key"
    );
    c.add("b", "two", None, None).await?;
    let mut got: Vec<(Vec<u8>, Vec<u8>)> = c
        .get_multi(["a", "b", "missing"])
        .await?
        .into_iter()
        .map(|v| (v.key, v.data.unwrap_or_default()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), b"one".to_vec()),
            (b"b".to_vec(), b"two".to_vec())
        ]
    );

    let results = c.set_multi(&[("m1", "x"), ("m2", "y")], None, None).await?;
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");

    c.set("n", 10u64, None, None).await?;
    assert_eq!(c.increment("n", 5).await?, 15);
    assert_eq!(c.decrement("n", 20).await?, 0);
    c.increment_no_reply("n", 3).await?;
    assert_eq!(c.increment("n", 0).await?, 3);

    c.delete("a").await?;
    assert!(c.get("a").await?.is_none());
    c.delete_no_reply("b").await?;
    c.delete_multi_no_reply(&["m1", "m2"]).await?;
    for key in ["b", "m1", "m2"] {
        assert!(c.get(key).await?.is_none(), "{key} survived its delete");
    }

    let stats = c.stats().await?;
    for name in [
        "curr_items",
        "get_hits",
        "get_misses",
        "cmd_set",
        "curr_connections",
    ] {
        assert!(stats.contains_key(name), "stats lacks {name}: {stats:?}");
    }
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_memcached_meta_protocol_and_leases() -> R {
    let s = TestServer::start().await;
    let mut c = Client::new(format!("tcp://{}", s.addr)).await?;

    // ms with flags and TTL; mg returning value, flags, TTL, CAS, key, size and opaque.
    c.meta_set("k", "hello", false, None, Some(&["F5", "T100"]))
        .await?;
    let v = c
        .meta_get(
            "k",
            false,
            Some(b"op1"),
            Some(&["v", "f", "t", "c", "k", "s"]),
        )
        .await?
        .expect("k is set");
    assert_eq!(v.data.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        (v.flags, v.ttl_remaining, v.size),
        (Some(5), Some(100), Some(5))
    );
    assert_eq!(v.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(v.opaque_token.as_deref(), Some(&b"op1"[..]));
    let cas = v.cas.expect("c flag");

    // Compare-and-swap with the CAS just read, then with the stale one.
    c.meta_set("k", "world", false, None, Some(&[&format!("C{cas}")]))
        .await?;
    assert!(
        c.meta_set("k", "late", false, None, Some(&[&format!("C{cas}")]))
            .await
            .is_err(),
        "a stale CAS must be refused"
    );
    let v = c.meta_get("k", false, None, Some(&["v"])).await?.unwrap();
    assert_eq!(v.data.as_deref(), Some(&b"world"[..]));

    // A miss is None; quiet mode too.
    assert!(c
        .meta_get("missing", false, None, Some(&["v"]))
        .await?
        .is_none());
    assert!(c
        .meta_get("missing", true, None, Some(&["v"]))
        .await?
        .is_none());

    // Leases: the first miss with N wins (W), the next is told to wait (Z); the winner's set with its
    // CAS stores, after an invalidation (md I) the value is served stale (X) with one new winner.
    let first = c
        .meta_get("hot", false, None, Some(&["v", "c", "N30"]))
        .await?
        .expect("N creates a placeholder");
    assert_eq!(first.is_recache_winner, Some(true));
    let second = c
        .meta_get("hot", false, None, Some(&["v", "c", "N30"]))
        .await?
        .unwrap();
    assert_eq!(second.is_recache_winner, Some(false));
    let token = first.cas.expect("the winner gets a CAS");
    c.meta_set("hot", "fresh", false, None, Some(&[&format!("C{token}")]))
        .await?;
    c.meta_delete("hot", false, None, Some(&["I"])).await?;
    let stale = c
        .meta_get("hot", false, None, Some(&["v", "c"]))
        .await?
        .unwrap();
    assert_eq!(
        (
            stale.data.as_deref(),
            stale.is_stale,
            stale.is_recache_winner
        ),
        (Some(&b"fresh"[..]), Some(true), Some(true))
    );
    let other = c.meta_get("hot", false, None, Some(&["v"])).await?.unwrap();
    assert_eq!(
        (other.is_stale, other.is_recache_winner),
        (Some(true), Some(false))
    );
    // The reader's CAS from before the invalidation no longer stores.
    assert!(
        c.meta_set("hot", "old", false, None, Some(&[&format!("C{token}")]))
            .await
            .is_err(),
        "a write-back with the pre-invalidation token must be refused"
    );

    // Arithmetic, delete, and the pipelined multi forms (quiet requests closed by mn).
    c.meta_set("n", "41", false, None, None).await?;
    let n = c
        .meta_increment("n", false, None, Some(1), Some(&["v"]))
        .await?
        .unwrap();
    assert_eq!(n.data.as_deref(), Some(&b"42"[..]));
    c.meta_delete("n", false, None, None).await?;
    assert!(c.meta_get("n", false, None, Some(&["v"])).await?.is_none());

    let stored = c
        .meta_set_multi(&[("p1", "a"), ("p2", "b"), ("p3", "c")], None)
        .await?;
    assert!(
        stored.is_empty(),
        "quiet sets that succeed answer nothing: {stored:?}"
    );
    let mut got: Vec<Vec<u8>> = c
        .meta_get_multi(&["p1", "p2", "missing", "p3"], Some(&["v", "k"]))
        .await?
        .into_iter()
        .map(|v| v.data.unwrap_or_default())
        .collect();
    got.sort();
    assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    s.stop().await;
    Ok(())
}
