//! Differential test against a real memcached: the same random request sequences go to cache-node (in
//! process, port 0, `ManualClock`) and to `/usr/bin/memcached` (or `$MEMCACHED`, started here on a free
//! 127.0.0.1 port, killed on drop), one request at a time in lockstep, and the replies must be identical
//! after normalising CAS values (each server's tokens become `#0`, `#1`, ... by first appearance, and a
//! request that sends a CAS back sends that server's own token for the same placeholder) and remaining TTLs
//! (`t` flags become `t-1` or `t+`: the two clocks differ).
//!
//! The sequences use five keys per case (a fresh key prefix per case; `flush_all` without delay now and
//! then) over text storage/retrieval/arithmetic/touch commands with and without `noreply`, meta
//! `mg ms md ma mn` (one key always in base64 with `b`), and malformed requests. Each request is followed
//! by `mn`, and its reply is everything before `MN`. One case in four is meta only with leases (`mg N`,
//! `R`, `md I`, `ms I`), which text commands see differently.
//! It does not cover what SERVER.md lists as known differences (leases and stale items seen by text
//! commands, flags above 2^32 - 1, the meta `E` flag, ...), positive TTLs that need wall time to pass,
//! `flush_all` with a delay, `stats` and `version`, nor incr/decr/ma on a counter of 2^63 or more
//! (memcached's answer there depends on the bytes after the value: such a request is not sent, see
//! `GEN` and `memcached_misreads_a_large_counter_by_the_bytes_after_it`).
//!
//! How it fails: against cache-node as it was before the fixes it found (see SERVER.md, "Known
//! differences"), the first cases already differ (`mg` with no key: `CLIENT_ERROR bad command line format`,
//! memcached `ERROR`; `ma k N0 T-1` then `get k`: a value, memcached none), and each fix came with a
//! `tests/tcp.rs` test that failed before it.
//!
//! The request generators, the normalisation and the property-test loop are shared with
//! `memcached_pipeline_diff.rs` (`common/diff.rs`); `GEN` below says what this test generates beyond it.
//!
//! A failure prints the seed, the full transcript of the shrunk case (requests as sent to each server and
//! both replies) and the first differing request. Cases: `DIFF_CASES` (default 512); seed:
//! `PROPTEST_RNG_SEED` (default fixed). Without memcached the test fails and says to run `scripts/setup`.

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::diff::{self, raw, text, Cas, CasMap, Gen, Piece, Req, Settings};
use common::TestServer;
use proptest::prelude::*;

/// Only there to turn a hang into a failure: every exchange ends with `mn`, so nothing waits for it.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const SETTINGS: Settings = Settings {
    name: "memcached_diff",
    counted: "requests",
    cases_var: "DIFF_CASES",
    default_cases: 512,
    default_seed: 0x5e_a1_d1_ff,
    max_shrink_iters: 2_000,
    max_shrink_time: 20_000,
};

/// What this test generates where `memcached_pipeline_diff.rs` generates less (see there why):
/// - CAS values from earlier replies (`cas`): in lockstep each request is sent after the reply before it,
///   so it can send a server's own token back;
/// - flags 1, exptimes -100 (expired) and 2592001 (one over 30 days: an absolute time in the past), and
///   the delta 2^64 - 2;
/// - `noreply` on one text command in five;
/// - a bare `mn` rarely (1 in 13 meta requests): each request is followed by one anyway;
/// - numbers up to 2^64 - 1: an incr, decr or ma is not sent when cache-node's store holds a counter of
///   2^63 or more for its key (read in process before the request; memcached's answer there depends on
///   the bytes after the value, see `Gen::max_number`), so the u64 edges are reached and left by the
///   other commands.
const GEN: Gen = Gen {
    noreply: 0.2,
    extra_flags: &["1"],
    extra_exptimes: &["-100", "2592001"],
    extra_deltas: &["18446744073709551614"],
    cas_flag,
    keyed_meta_weight: 12,
    max_number: u64::MAX,
};

// ------------------------------------------------------------------------------------------------
// Generation (what only this test sends; the rest is in `common::diff`).

/// A CAS value to send: one seen in an earlier reply of the case, or a literal.
fn cas() -> impl Strategy<Value = Cas> {
    prop_oneof![
        4 => (0usize..16).prop_map(Cas::Seen),
        1 => prop_oneof![Just(0u64), Just(1), Just(999_999_999)].prop_map(Cas::Literal),
    ]
}

/// The meta `C` flag.
fn cas_flag() -> BoxedStrategy<Piece> {
    cas().prop_map(|c| Piece::Cas("C", c)).boxed()
}

fn text_request() -> impl Strategy<Value = Req> {
    let storage = GEN.storage(Gen::storage_verb(), Just(text("")));
    let cas_store = GEN.storage(Just("cas"), cas().prop_map(|c| Piece::Cas("", c)));
    // No delay: a delayed flush needs wall time to pass.
    let flush = prop_oneof![Just("0"), Just("-1"), Just("noreply"), Just("")].prop_map(|arg| Req {
        line: [text("flush_all")]
            .into_iter()
            .chain((!arg.is_empty()).then(|| text(arg)))
            .collect(),
        data: None,
    });
    GEN.text_request(vec![
        (6, storage.boxed()),
        (2, cas_store.boxed()),
        (1, flush.boxed()),
    ])
}

/// Malformed requests both servers answer the same way: the shared ones and these.
fn malformed_request() -> impl Strategy<Value = Req> {
    let long_key = |words: &[&str]| {
        let mut line = vec![text(words[0]), Piece::LongKey];
        line.extend(words[1..].iter().map(|w| text(*w)));
        Req { line, data: None }
    };
    diff::malformed_request(vec![
        raw(&["decr", "KEY", "-1"], None),
        raw(&["touch", "KEY"], None),
        raw(&["delete"], None),
        raw(&["mg", "KEY", "!"], None),
        raw(&["md", "KEY", "!"], None),
        raw(&["ma", "KEY", "!"], None),
        raw(&["ma", "KEY", "v", "v"], None),
        raw(&["ms", "KEY", "1", "c", "c"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "MZ"], Some(b"a\r\n")),
        raw(&["delete", "KEY", "0"], None),
        raw(&["delete", "KEY", "5"], None),
        raw(&["incr", "KEY", "18446744073709551616"], None),
        raw(&["touch", "KEY", "abc"], None),
        raw(&["gat", "abc", "KEY"], None),
        raw(&["verbosity"], None),
        raw(&["verbosity", "x"], None),
        raw(&["verbosity", "1", "extra"], None),
        raw(&["incr", "KEY", "1", "extra"], None),
        raw(&["touch", "KEY", "0", "extra"], None),
        raw(&["incr", "KEY", "noreply"], None),
        raw(&["touch", "KEY", "noreply"], None),
        raw(&["delete", "KEY", "0", "noreply"], None),
        raw(&["delete", "KEY", "0", "0", "noreply"], None),
        raw(&["delete", "KEY", "noreply", "0"], None),
        raw(&["verbosity", "noreply"], None),
        raw(&["flush_all", "abc", "noreply"], None),
        raw(&["flush_all", "0", "0", "noreply"], None),
        raw(&["set", "KEY", "0", "0", "noreply"], None),
        long_key(&["incr", "1", "noreply"]),
        long_key(&["touch", "0", "noreply"]),
        long_key(&["mg", "v"]),
        long_key(&["delete"]),
    ])
}

/// A case: either text and meta commands mixed (without leases), or meta commands only with leases.
fn case() -> impl Strategy<Value = Vec<Req>> {
    prop_oneof![
        3 => prop::collection::vec(
            prop_oneof![
                6 => text_request().boxed(),
                3 => GEN.meta_request(false),
                1 => malformed_request().boxed(),
            ],
            1..40,
        ),
        1 => prop::collection::vec(GEN.meta_request(true), 1..40),
    ]
}

// ------------------------------------------------------------------------------------------------
// Running a case in lockstep.

struct Side {
    name: &'static str,
    stream: TcpStream,
    cas: CasMap,
}

impl Side {
    fn connect(name: &'static str, addr: SocketAddr) -> Side {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {name}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Side {
            name,
            stream,
            cas: CasMap::default(),
        }
    }

    /// Sends the request and `mn`, returns the raw reply before the last `MN` (`request` is itself an `mn`
    /// when `own_mn`).
    fn exchange(&mut self, request: &[u8], own_mn: bool) -> Result<Vec<u8>, String> {
        let mut out = request.to_vec();
        out.extend_from_slice(b"mn\r\n");
        let wanted = if own_mn { 2 } else { 1 };
        let count_mn = |reply: &[u8]| {
            usize::from(reply.starts_with(b"MN\r\n"))
                + reply.windows(6).filter(|w| w == b"\r\nMN\r\n").count()
        };
        self.stream
            .write_all(&out)
            .map_err(|e| format!("{}: write: {e}", self.name))?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if (reply == b"MN\r\n" || reply.ends_with(b"\r\nMN\r\n")) && count_mn(&reply) >= wanted
            {
                reply.truncate(reply.len() - 4);
                return Ok(reply);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(format!(
                        "{}: connection closed after {:?}",
                        self.name,
                        String::from_utf8_lossy(&reply)
                    ))
                }
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    return Err(format!(
                        "{}: {e} after {:?}",
                        self.name,
                        String::from_utf8_lossy(&reply)
                    ))
                }
            }
        }
    }
}

static CASE_NUMBER: AtomicUsize = AtomicUsize::new(0);
/// Arithmetic requests not sent because their key held a counter of 2^63 or more.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Whether cache-node holds for `key` a number memcached 1.6 may misread: its leading digits (after
/// blanks and a `+`, as strtoull reads them) make 2^63 or more and fit in 64 bits. Read from the store
/// in process, which counts as no access.
fn holds_a_counter_from_2_63(ours: &TestServer, key: &str) -> bool {
    let value = ours
        .node
        .store
        .with_entry(key.as_bytes(), |e| e.item().map(|it| it.value().to_vec()));
    let Some(value) = value else { return false };
    let text = String::from_utf8_lossy(&value);
    let text = text.trim_start();
    let text = text.strip_prefix('+').unwrap_or(text);
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<u64>().is_ok_and(|n| n >= 1 << 63)
}

/// Runs one case against both servers; `Err` holds the transcript up to and including the first difference.
fn run_case(ours: &TestServer, memcached: SocketAddr, reqs: &[Req]) -> Result<(), String> {
    let prefix = format!("d{}_", CASE_NUMBER.fetch_add(1, Ordering::Relaxed));
    let mut a = Side::connect("cache-node", ours.addr);
    let mut b = Side::connect("memcached", memcached);
    let mut transcript = String::new();
    for (i, req) in reqs.iter().enumerate() {
        if let Some(k) = req.arithmetic_key() {
            if holds_a_counter_from_2_63(ours, &format!("{prefix}k{k}")) {
                SKIPPED.fetch_add(1, Ordering::Relaxed);
                writeln!(
                    transcript,
                    "   request {i} not sent (a counter of 2^63 or more): {}",
                    req.describe(&prefix, &a.cas)
                )
                .unwrap();
                continue;
            }
        }
        let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
        req.render(&prefix, &a.cas, &mut sent_a);
        req.render(&prefix, &b.cas, &mut sent_b);
        let own_mn = req.is("mn");
        let raw_a = a.exchange(&sent_a, own_mn);
        let raw_b = b.exchange(&sent_b, own_mn);
        let (raw_a, raw_b) = match (raw_a, raw_b) {
            (Ok(x), Ok(y)) => (x, y),
            (x, y) => {
                return Err(format!(
                    "{transcript}request {i}: {:?}\n  cache-node: {x:?}\n  memcached: {y:?}",
                    String::from_utf8_lossy(&sent_a)
                ))
            }
        };
        // CAS placeholders are numbered over the whole case: a later request sends them back.
        let norm_a = diff::normalise(&raw_a, &mut a.cas);
        let norm_b = diff::normalise(&raw_b, &mut b.cas);
        let same = norm_a == norm_b;
        writeln!(
            transcript,
            "{} request {i}\n  to cache-node: {:?}\n  to memcached:  {:?}\n  cache-node: {:?}\n  memcached:  {:?}",
            if same { "  " } else { ">>" },
            String::from_utf8_lossy(&sent_a),
            String::from_utf8_lossy(&sent_b),
            String::from_utf8_lossy(&raw_a),
            String::from_utf8_lossy(&raw_b),
        )
        .unwrap();
        if !same {
            return Err(format!(
                "{transcript}first difference at request {i} (normalised):\n  cache-node: {norm_a:?}\n  memcached:  {norm_b:?}\n{}",
                held_after(&prefix, &mut a, &mut b)
            ));
        }
    }
    Ok(())
}

/// What each server holds for the case's keys once they differ (`mg` with size, value, flags, TTL and
/// CAS; raw, not normalised): a difference that depends on what happened before the case shows here.
fn held_after(prefix: &str, a: &mut Side, b: &mut Side) -> String {
    let mut held = String::from("held after the difference (mg KEY s v f t c):\n");
    for k in 0..diff::KEYS {
        let request = format!("mg {prefix}k{k} s v f t c\r\n");
        for side in [&mut *a, &mut *b] {
            let reply = match side.exchange(request.as_bytes(), false) {
                Ok(reply) => format!("{:?}", String::from_utf8_lossy(&reply)),
                Err(e) => e,
            };
            writeln!(held, "  {} {prefix}k{k}: {reply}", side.name).unwrap();
        }
    }
    held
}

#[test]
fn same_replies_as_memcached() {
    diff::check(&SETTINGS, &case(), Vec::len, |ours, memcached, reqs| {
        run_case(ours, memcached, &reqs)
    });
    eprintln!(
        "memcached_diff: {} incr/decr/ma not sent (a counter of 2^63 or more)",
        SKIPPED.load(Ordering::Relaxed)
    );
}

/// Why an incr, decr or ma on a counter of 2^63 or more is not sent (`GEN`): memcached 1.6's answer
/// there depends on the bytes after the value. The same `18446744073709551614` is incremented in a fresh
/// slab chunk and is "non-numeric" in a chunk where a freed value left a `-` after it (its
/// `safe_strtoull` calls `strchr(str, '-')` on the unterminated value). cache-node increments both, as
/// memcached means to. If memcached stops reading past the value, this test fails and the skip can go.
#[test]
fn memcached_misreads_a_large_counter_by_the_bytes_after_it() {
    let memcached = common::Memcached::start();
    let runtime = diff::runtime();
    let ours = runtime.block_on(TestServer::start());
    let addr = SocketAddr::from(([127, 0, 0, 1], memcached.port));
    let steps: [(&[u8], &str, &str); 5] = [
        (
            b"set fresh 0 0 20\r\n18446744073709551614\r\n",
            "STORED",
            "STORED",
        ),
        (
            b"incr fresh 1\r\n",
            "18446744073709551615",
            "18446744073709551615",
        ),
        // Same slab class as the counter below: its chunk is the next one handed out.
        (
            b"set dash 0 0 30\r\naaaaaaaaaaaaaaaaaaaaaaaaa-aaaa\r\n",
            "STORED",
            "STORED",
        ),
        (b"delete dash\r\n", "DELETED", "DELETED"),
        (
            b"set big 0 0 20\r\n18446744073709551614\r\nincr big 1\r\n",
            "STORED\r\n18446744073709551615",
            "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value",
        ),
    ];
    let mut a = Side::connect("cache-node", ours.addr);
    let mut b = Side::connect("memcached", addr);
    for (request, want_ours, want_memcached) in steps {
        for (side, want) in [(&mut a, want_ours), (&mut b, want_memcached)] {
            let reply = side.exchange(request, false).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&reply),
                format!("{want}\r\n"),
                "{} to {:?}",
                side.name,
                String::from_utf8_lossy(request)
            );
        }
    }
    runtime.block_on(ours.stop());
}
