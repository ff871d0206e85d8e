//! Differential test of pipelining against a real memcached: where `memcached_diff.rs` sends one request
//! at a time in lockstep, this one sends a whole random batch of requests, as real clients and mcrouter
//! do, to cache-node (in process, port 0, `ManualClock`) and to `/usr/bin/memcached` (or `$MEMCACHED`,
//! started here; killed on drop) and compares the two full reply streams.
//!
//! Each case is one batch (a fresh key prefix, five keys) followed by a final `mn`, sent twice per server
//! under two prefixes: once in one write, and once cut at random byte positions into up to nine writes
//! with short pauses between them (a line, a data block or a `\r\n` split anywhere). Each run reads until
//! the final `mn`'s `MN` (or, after a `quit`, until the server closes the connection: nothing after the
//! `quit` may be answered). The batch mixes what `memcached_diff.rs` sends (text and meta commands with
//! and without `noreply`/`q`, `mn` in between, malformed requests whose data block is swallowed or read
//! as a command, bad data chunks) with what only pipelining exercises: values of 20 KB to 900 KB (the
//! server reads them into room it holds in the store, in pieces) and values over `-I` (refused and
//! swallowed) with requests behind them in the same write, values of 2-16 KB and multi-gets of up to
//! 400 keys whose replies cross the server's 32 KiB reply batch (`MAX_BATCH_REPLY_BYTES`; a multi-get is
//! stopped and carried on), and `quit` in the middle. No request sends a CAS value from a reply back (it
//! is not known before the batch is sent): a CAS sent is one no item has. Before each run both servers
//! get `flush_all`, so the values of earlier cases do not make either evict.
//!
//! Replies are compared after the normalisation both tests share (`common/diff.rs`, with the small
//! request generators and malformed requests; `GEN` below says what this test generates differently):
//! each server's CAS values become `#0`, `#1`, ... in order of first appearance, remaining TTLs
//! `t-1`/`t+`, and memcached's space-padded incr/decr results lose their padding. Data blocks over 80
//! bytes are compared as their length and hash.
//! After a `quit` one reply may be the other's cut short (but for its last two lines), and neither may
//! answer an `mn` after the `quit`: a server that closes with requests after the `quit` unread, or still
//! arriving, makes its kernel reset the connection and drop the replies not yet sent. Both servers do
//! that (seen with replies of 64-256 KB before the `quit`); it is TCP, not either server.
//!
//! What it does not generate, each a difference SERVER.md documents: a key over 250 bytes on a storage
//! command (cache-node swallows its data block, memcached reads it as a command; "Limits and bad input"),
//! lines over 2048 bytes other than `get`s (memcached closes the connection, cache-node answers
//! `CLIENT_ERROR line too long` from 16 KiB; "Limits and bad input"), appends that grow a value near or
//! past `-I` (where the two bounds differ; past both, both answer `NOT_STORED`/`NS`:
//! `an_append_past_the_item_size_limit_is_not_stored_as_memcached`), values within 1 KiB of `-I`
//! (memcached bounds the whole item; "Known differences"), `ma` with a `C` on a value over about 512 KB ("Known differences"), a get with a key
//! over 250 bytes after other requests (memcached drops their unsent replies; "Known differences"),
//! leases, and the rest of what `memcached_diff.rs` leaves out. (memcached prints "Failed to write, and
//! not due to blocking" when a `quit` batch's connection is reset under it: expected noise.)
//!
//! A failure prints the seed, the shrunk batch (data blocks abbreviated), how it was cut, and both
//! servers' normalised replies around the first differing line. Cases: `PIPELINE_DIFF_CASES` (default
//! 300); seed: `PROPTEST_RNG_SEED` (default fixed). Without memcached the test fails and says to run
//! `scripts/setup`.

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::diff::{
    self, appended_key, key, lit, raw, text, text_key, with_noreply, CasMap, Data, Gen, Piece, Req,
    Settings, NEVER_ISSUED_CAS,
};
use common::{Memcached, TestServer};
use proptest::prelude::*;

const READ_TIMEOUT: Duration = Duration::from_secs(5);
const SETTINGS: Settings = Settings {
    name: "memcached_pipeline_diff",
    counted: "requests (each batch twice)",
    cases_var: "PIPELINE_DIFF_CASES",
    default_cases: 300,
    default_seed: 0x91_9e_11_4e,
    max_shrink_iters: 1_000,
    max_shrink_time: 30_000,
};
/// `-I`, the same for both servers (memcached's default, `ServerConfig`'s default).
const MAX_ITEM: usize = 1 << 20;
/// The most a multi-get may return, about (see `case`).
const MAX_MULTI_GET_BYTES: usize = 3 << 20;
/// Values of more than 16 KiB (cache-node reads them into room held in the store) per batch.
const MAX_BIG_PER_BATCH: usize = 3;

/// What this test generates where `memcached_diff.rs` generates more:
/// - no CAS value from a reply (`never_issued_cas`): the whole batch is written before any reply is
///   read, so a CAS sent is one no item has;
/// - no flags 1, no exptimes -100 and 2592001: this test was written with the smaller set of values
///   (the kinds they stand for, expired and huge, are here: -1, 1000000000), and adding them would
///   widen what it sends;
/// - numbers (values, deltas, `ma` initial values) below 2^56, so no counter reaches 2^63 in a batch
///   of under 40 requests: memcached's answer to an incr of such a counter depends on the bytes after
///   the value (see `Gen::max_number`), and a batch cannot be stopped before one. `memcached_diff.rs`
///   sends the u64 edges;
/// - `noreply` on three text commands in ten: more replies left out of the stream;
/// - a bare `mn` more often (1 in 9 meta requests): it marks a point in the reply stream.
///
/// And no leases (`meta_request(false)`): text commands see them differently, and a batch mixes both.
const GEN: Gen = Gen {
    noreply: 0.3,
    extra_flags: &[],
    extra_exptimes: &[],
    extra_deltas: &[],
    cas_flag: never_issued_cas,
    keyed_meta_weight: 8,
    max_number: (1 << 56) - 1,
};

// ------------------------------------------------------------------------------------------------
// Generation (what only this test sends; the small requests are in `common::diff`).

/// The meta `C` flag: a CAS value no item has.
fn never_issued_cas() -> BoxedStrategy<Piece> {
    lit(format!("C{NEVER_ISSUED_CAS}"))
}

/// Text commands without `flush_all` (each run starts with one) and with a `cas` among the storage
/// commands, of a CAS no item has: EXISTS or NOT_FOUND.
fn text_request() -> impl Strategy<Value = Req> {
    // The six verbs alike likely.
    let verb = prop_oneof![5 => Gen::storage_verb(), 1 => Just("cas")];
    let storage = GEN.storage(verb, Just(text(NEVER_ISSUED_CAS.to_string())));
    GEN.text_request(vec![(7, storage.boxed())])
}

/// Malformed requests both servers answer the same way, each whole (a data block that is swallowed is
/// sent with it, so the next request starts where the batch says): the shared ones and these. `q` does
/// not hide an error.
fn malformed_request() -> impl Strategy<Value = Req> {
    diff::malformed_request(vec![
        raw(&["set", "KEY", "0", "0", "1"], Some(b"abcde\r\n")),
        raw(&["ms", "KEY", "2"], Some(b"abcd\r\n")),
        raw(&["ms", "KEY", "2", "q"], Some(b"abcd\r\n")),
        raw(&["mg", "KEY", "!", "q"], None),
        raw(&["ma", "KEY", "!", "q"], None),
        raw(&["ms", "KEY", "1", "c", "c", "q"], Some(b"a\r\n")),
        raw(&["ms", "KEY", "1", "MZ", "q"], Some(b"a\r\n")),
        raw(&["verbosity", "1", "noreply"], None),
        Req {
            line: vec![text("mg"), Piece::LongKey, text("v"), text("q")],
            data: None,
        },
    ])
}

/// A value of 20 KB to 900 KB, or one over `-I`, stored by a text command or `ms` (whose too-large
/// refusal removes the key's item in memcached, for `set` and every `ms`), sometimes with a bad data
/// chunk. Appends stay small enough that no value grows near `-I`, where the two servers' bounds
/// differ (see the header). At most [`MAX_BIG_PER_BATCH`] per batch.
fn big_request() -> impl Strategy<Value = Req> {
    let size = prop_oneof![
        6 => 20_000usize..200_000,
        2 => 200_000usize..900_000,
        // Over -I: refused by both (memcached's bound is on the whole item, a bit below -I).
        3 => MAX_ITEM + 1..MAX_ITEM + 200_000,
    ];
    (
        prop_oneof![
            3 => Just("set"),
            1 => Just("add"),
            1 => Just("replace"),
            1 => Just("append"),
            1 => Just("prepend"),
            2 => Just("ms"),
            1 => Just("ms q"),
            1 => Just("ms MR"),
            1 => Just("ms MA"),
        ],
        text_key(),
        size,
        any::<u8>(),
        GEN.noreply(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(verb, k, size, start, nr, bad_end)| {
            let appends = verb.ends_with("pend") || verb.ends_with("MA");
            let len = if appends && size <= MAX_ITEM {
                20_000 + size % 10_000
            } else {
                size
            };
            let k = if appends { appended_key(k) } else { k };
            // memcached stores a value over about 512 KB in chunks and answers `ma` on it non-numeric
            // before it checks a `C` (cache-node: `EX` first, as memcached for shorter values; SERVER.md,
            // Known differences), so the counter keys get no value that long.
            let len = if k < 2 && len <= MAX_ITEM {
                len.min(500_000)
            } else {
                len
            };
            let mut words = verb.split(' ');
            let command = words.next().unwrap();
            let mut line = vec![text(command), Piece::Key(k)];
            if command == "ms" {
                line.push(text(len.to_string()));
                line.extend(words.map(text));
            } else {
                line.extend([text("0"), text("0"), text(len.to_string())]);
                line = with_noreply(line, nr);
            }
            Req {
                line,
                data: Some(Data::Pattern {
                    len,
                    start,
                    bad_end,
                }),
            }
        })
}

/// A value of 2-16 KB, so that a multi-get of a few dozen keys crosses the 32 KiB reply batch.
fn medium_set() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just("set"), Just("ms")],
        text_key(),
        2_000usize..16_000,
        any::<u8>(),
    )
        .prop_map(|(verb, k, len, start)| {
            let line = if verb == "ms" {
                vec![text("ms"), Piece::Key(k), text(len.to_string())]
            } else {
                vec![
                    text("set"),
                    Piece::Key(k),
                    text("0"),
                    text("0"),
                    text(len.to_string()),
                ]
            };
            Req {
                line,
                data: Some(Data::Pattern {
                    len,
                    start,
                    bad_end: false,
                }),
            }
        })
}

/// A multi-get of 10-400 keys (repeats of the case's five): a line of up to about 4 KB, a reply of up to
/// hundreds of values; one in five `get`/`gets` names 1,700-4,000 keys, a line of 17-40 KB, over
/// cache-node's 16 KiB line bound, which it reads in parts. memcached reads `get`/`gets` lines past
/// 2048 bytes, but closes the connection
/// when 2048 bytes of any other line (`gat`, `gats`) are in without their `\n`, which a batch cut
/// into pieces makes happen (SERVER.md, "Limits and bad input": memcached closes non-get lines over 2048
/// bytes), so `gat`/`gats` take at most 150 keys (about 1.6 KB).
fn multi_get() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just("get"), Just("gets"), Just("gat 0"), Just("gats 3600")],
        prop_oneof![4 => 10..400usize, 1 => 1_700..4_000usize]
            .prop_flat_map(|n| prop::collection::vec(key(), n)),
    )
        .prop_map(|(verb, mut ks)| {
            if verb.starts_with("gat") {
                ks.truncate(150);
            }
            let mut line: Vec<Piece> = verb.split(' ').map(text).collect();
            line.extend(ks.into_iter().map(Piece::Key));
            Req { line, data: None }
        })
}

/// A batch, and how to cut it: positions (modulo the batch's length) and the pause between writes.
#[derive(Debug, Clone)]
struct Case {
    reqs: Vec<Req>,
    cuts: Vec<u32>,
    pause_us: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let request = prop_oneof![
        16 => text_request().boxed(),
        8 => GEN.meta_request(false),
        3 => malformed_request().boxed(),
        2 => big_request().boxed(),
        2 => medium_set().boxed(),
        2 => multi_get().boxed(),
        1 => Just(Req { line: vec![text("quit")], data: None }).boxed(),
    ];
    (
        prop::collection::vec(request, 1..40),
        prop::collection::vec(any::<u32>(), 0..9),
        0u64..2_000,
    )
        .prop_map(|(mut reqs, cuts, pause_us)| {
            // memcached 1.6.18 drops the replies it has not sent yet, to earlier requests of the same
            // read, when a get/gets/gat/gats has a key over 250 bytes (`conn_release_items` before its
            // CLIENT_ERROR): `set k 0 0 1\r\na\r\nget <251 bytes>\r\n` is answered with the
            // CLIENT_ERROR alone. A memcached bug (SERVER.md, Known differences), so such a get only
            // opens a batch.
            let mut at = 0;
            reqs.retain(|r| {
                at += 1;
                at == 1 || !matches!(&r.line[..], [Piece::Text(_), Piece::LongKey])
            });
            let mut big = 0;
            reqs.retain(|r| {
                let is_big = r.data.as_ref().is_some_and(Data::is_big);
                big += usize::from(is_big);
                !is_big || big <= MAX_BIG_PER_BATCH
            });
            // Bound the bytes a multi-get may return (keys times the largest value stored before it),
            // which keeps the run time down: a few long lines of small values, or a few large values.
            let mut largest = 64;
            for r in &mut reqs {
                if let Some(Data::Pattern { len, .. }) = &r.data {
                    largest = largest.max((*len).min(MAX_ITEM));
                }
                let (keys, words) = (
                    r.line.iter().filter(|p| matches!(p, Piece::Key(_))).count(),
                    r.line.len(),
                );
                if keys > 3 && r.data.is_none() && keys * largest > MAX_MULTI_GET_BYTES {
                    r.line
                        .truncate(words - keys + (MAX_MULTI_GET_BYTES / largest).max(3));
                }
            }
            Case {
                reqs,
                cuts,
                pause_us,
            }
        })
}

// ------------------------------------------------------------------------------------------------
// Running a batch and normalising the reply stream.

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// The expected number of `MN` lines arrived.
    AllMn,
    /// The server closed the connection (after a `quit`).
    Closed,
    /// The connection was reset after a `quit`: the server closed it with requests after the `quit` unread,
    /// so its kernel sent a reset and dropped what it had not sent yet. The reply may be cut short.
    Reset,
    /// Something else: timed out, or closed when it should not have.
    Failed(String),
}

/// Sends `batch` cut at `cuts` (sorted positions) with `pause` between the writes from a second thread,
/// and reads meanwhile until `mn_wanted` `MN` lines arrived (`None`: until the connection closes).
fn run_side(
    addr: SocketAddr,
    batch: &[u8],
    cuts: &[usize],
    pause: Duration,
    mn_wanted: Option<usize>,
) -> (Vec<u8>, End) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), End::Failed(format!("connect: {e}"))),
    };
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut from = 0;
            for &to in cuts.iter().chain([batch.len()].iter()) {
                if to <= from {
                    continue;
                }
                if from > 0 && !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                // After a quit the server may have closed: the rest is not delivered, as it should be.
                if writer.write_all(&batch[from..to]).is_err() {
                    return;
                }
                from = to;
            }
        });
        let mut reply = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        let mut mn_seen = 0;
        let mut scanned: usize = 0;
        loop {
            if let Some(wanted) = mn_wanted {
                // `MN` lines: at the start, or after a `\r\n`. Values are lower-case letters and digits.
                // Each `MN\r\n` at the start of a line that ends past what was scanned before.
                let from = scanned.saturating_sub(3);
                mn_seen += memchr::memmem::find_iter(&reply[from..], b"MN\r\n")
                    .map(|p| from + p)
                    .filter(|&p| p + 4 > scanned && (p == 0 || reply[p - 1] == b'\n'))
                    .count();
                scanned = reply.len();
                if mn_seen >= wanted {
                    return (reply, End::AllMn);
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    let end = match mn_wanted {
                        None => End::Closed,
                        Some(_) => End::Failed("closed before the last MN".into()),
                    };
                    return (reply, end);
                }
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
                // A reset after quit: the server closed with bytes still coming in.
                Err(e)
                    if mn_wanted.is_none() && e.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    return (reply, End::Reset)
                }
                Err(e) => return (reply, End::Failed(format!("read: {e}"))),
            }
        }
    })
}

/// The replies are the same or, after a `quit`, one is the other cut short: a prefix of it but for its
/// last two lines (a header line cut in the middle, and what its cut length took for a data block). A server that closes its connection with requests after the `quit` unread
/// (or arriving later) makes its kernel send a reset and drop the replies not yet sent, memcached and
/// cache-node alike, and the client sees that as a reset or as an early end. Either way no `MN` may
/// answer an `mn` after the `quit` (`mn_before_quit`).
fn same_or_cut_short(a: &[String], b: &[String], mn_before_quit: Option<usize>) -> bool {
    let Some(mn_before_quit) = mn_before_quit else {
        return a == b;
    };
    let cut_short = |short: &[String], long: &[String]| {
        let whole = short.len().saturating_sub(2);
        short.len() <= long.len() && short[..whole] == long[..whole]
    };
    let mn_lines = |lines: &[String]| lines.iter().filter(|l| *l == "MN").count();
    (a == b || cut_short(a, b) || cut_short(b, a))
        && mn_lines(a) <= mn_before_quit
        && mn_lines(b) <= mn_before_quit
}

static RUN_NUMBER: AtomicUsize = AtomicUsize::new(0);

/// The batch as bytes (with the final `mn`), how many `MN` lines answer it, and whether it has a `quit`
/// (then the reply is read until the server closes, and the `MN`s are those of the `mn`s before it).
fn render_batch(reqs: &[Req], prefix: &str) -> (Vec<u8>, usize, bool) {
    let mut batch = Vec::new();
    for r in reqs {
        r.render(prefix, &CasMap::default(), &mut batch);
    }
    batch.extend_from_slice(b"mn\r\n");
    let mut mn = 0;
    for r in reqs {
        if r.is("quit") {
            return (batch, mn, true);
        }
        mn += usize::from(r.is("mn"));
    }
    (batch, mn + 1, false)
}

fn flush(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("flush: connect: {e}"))?;
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(b"flush_all\r\n")
        .map_err(|e| format!("flush: {e}"))?;
    let mut got = [0u8; 4];
    s.read_exact(&mut got).map_err(|e| format!("flush: {e}"))?;
    if &got != b"OK\r\n" {
        return Err(format!("flush_all answered {got:?}"));
    }
    Ok(())
}

/// Runs the case against both servers, in one write and cut into pieces; `Err` holds the report.
fn run_case(ours: SocketAddr, memcached: SocketAddr, case: &Case) -> Result<(), String> {
    for piecewise in [false, true] {
        let prefix = format!("p{}_", RUN_NUMBER.fetch_add(1, Ordering::Relaxed));
        let (batch, mn_count, quit) = render_batch(&case.reqs, &prefix);
        let mn_wanted = (!quit).then_some(mn_count);
        let mut cuts: Vec<usize> = if piecewise {
            case.cuts
                .iter()
                .map(|&c| c as usize % (batch.len() + 1))
                .collect()
        } else {
            Vec::new()
        };
        cuts.sort_unstable();
        cuts.dedup();
        let pause = Duration::from_micros(if piecewise { case.pause_us } else { 0 });
        flush(ours)?;
        flush(memcached)?;
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| run_side(ours, &batch, &cuts, pause, mn_wanted));
            let b = run_side(memcached, &batch, &cuts, pause, mn_wanted);
            (a.join().unwrap(), b)
        });
        let (norm_a, norm_b) = (
            diff::normalise(&a.0, &mut CasMap::default()),
            diff::normalise(&b.0, &mut CasMap::default()),
        );
        let ended_well = |end: &End| match mn_wanted {
            Some(_) => *end == End::AllMn,
            None => matches!(end, End::Closed | End::Reset),
        };
        if ended_well(&a.1)
            && ended_well(&b.1)
            && same_or_cut_short(&norm_a, &norm_b, quit.then_some(mn_count))
        {
            continue;
        }
        let mut report = String::new();
        writeln!(report, "batch ({} bytes, prefix {prefix}):", batch.len()).unwrap();
        for (i, r) in case.reqs.iter().enumerate() {
            writeln!(
                report,
                "  {i:>3} {}",
                r.describe(&prefix, &CasMap::default())
            )
            .unwrap();
        }
        writeln!(report, "      \"mn\" (added)").unwrap();
        if quit {
            writeln!(
                report,
                "(with a quit: a reply may be the other's cut short, and may hold {mn_count} MN at most)"
            )
            .unwrap();
        }
        if piecewise {
            writeln!(
                report,
                "sent in pieces, cut at bytes {cuts:?}, {pause:?} between writes"
            )
            .unwrap();
        } else {
            writeln!(report, "sent in one write").unwrap();
        }
        writeln!(
            report,
            "cache-node ended: {:?} after {} bytes; memcached ended: {:?} after {} bytes",
            a.1,
            a.0.len(),
            b.1,
            b.0.len()
        )
        .unwrap();
        let first = norm_a
            .iter()
            .zip(&norm_b)
            .position(|(x, y)| x != y)
            .unwrap_or(norm_a.len().min(norm_b.len()));
        writeln!(
            report,
            "normalised replies ({} and {} lines), first difference at line {first}:",
            norm_a.len(),
            norm_b.len()
        )
        .unwrap();
        let from = first.saturating_sub(12);
        for (name, lines) in [("cache-node", &norm_a), ("memcached", &norm_b)] {
            writeln!(report, "  {name}:").unwrap();
            if from > 0 {
                writeln!(report, "      ... {from} identical lines").unwrap();
            }
            for (i, l) in lines.iter().enumerate().skip(from).take(first - from + 8) {
                writeln!(
                    report,
                    "    {}{i:>4} {l:?}",
                    if i == first { ">>" } else { "  " }
                )
                .unwrap();
            }
        }
        return Err(report);
    }
    Ok(())
}

#[test]
fn pipelined_batches_get_the_same_replies_as_memcached() {
    diff::check(
        &SETTINGS,
        &case(),
        |case| case.reqs.len(),
        |ours, memcached, case| run_case(ours.addr, memcached, &case),
    );
}

/// Sends `request` in one write and reads until `want.len()` bytes arrived (or 5 s passed).
fn exchange_bytes(addr: SocketAddr, request: &[u8], want: usize) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || writer.write_all(request).unwrap());
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while reply.len() < want {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            }
        }
        reply
    })
}

/// Sends `request` in one write to a fresh memcached and a fresh cache-node, and asserts both answer
/// exactly `want`.
fn both_answer(request: &[u8], want: &[u8]) {
    let memcached = Memcached::start();
    let runtime = diff::runtime();
    let server = runtime.block_on(TestServer::start());
    for (name, addr) in [
        (
            "memcached",
            SocketAddr::from(([127, 0, 0, 1], memcached.port)),
        ),
        ("cache-node", server.addr),
    ] {
        let got = exchange_bytes(addr, request, want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "{name}"
        );
    }
    runtime.block_on(server.stop());
}

/// Found by the property test: a `set` (or an `ms`, in any mode) refused as too large removes the item
/// it would have replaced, as memcached 1.6 does ("avoid stale data persisting in cache because we
/// failed alloc"), so the client that failed to write its new value does not go on reading the old one;
/// `add` leaves it. And `ms` checks its flags before the size, as memcached: `ms k 2000000 !` is an
/// invalid flag. Before the fix cache-node kept the old values (`VALUE x1 0 3`, `VA 3`, ...) and
/// answered the bad flag with `SERVER_ERROR object too large for cache`. The same bytes go to memcached.
#[test]
fn a_refused_too_large_set_removes_the_old_value_as_memcached_does() {
    let too_large = vec![b'x'; MAX_ITEM + 1];
    let mut request = Vec::new();
    let mut refused = |line: &str| {
        request.extend_from_slice(line.as_bytes());
        request.extend_from_slice(&too_large);
        request.extend_from_slice(b"\r\n");
    };
    refused("set tl1 0 0 1 noreply\r\na\r\nset tl1 0 0 1048577\r\n");
    refused("set tl2 0 0 1\r\nb\r\nset tl2 0 0 1048577 noreply\r\n");
    refused("ms tl3 1\r\nc\r\nms tl3 1048577 MA q\r\n");
    // Key tl4 in base64 (`b`).
    refused("ms tl4 1\r\nd\r\nms dGw0 1048577 b MS\r\n");
    refused("ms tl5 1\r\ne\r\nms tl5 1048577 !\r\n");
    refused("ms tl6 1\r\nf\r\nadd tl6 0 0 1048577\r\n");
    request.extend_from_slice(
        b"get tl1 tl2\r\nmg tl3 v\r\nmg tl4 v\r\nmg tl5 v\r\nmg tl6 v\r\nmn\r\n",
    );
    let want: &[u8] = b"SERVER_ERROR object too large for cache\r\n\
        STORED\r\n\
        HD\r\nSERVER_ERROR object too large for cache\r\n\
        HD\r\nSERVER_ERROR object too large for cache\r\n\
        HD\r\nCLIENT_ERROR invalid flag\r\n\
        HD\r\nSERVER_ERROR object too large for cache\r\n\
        END\r\nEN\r\nEN\r\nVA 1\r\ne\r\nVA 1\r\nf\r\nMN\r\n";
    both_answer(&request, want);
}

/// An append or prepend whose result would pass `-I` is `NOT_STORED` (meta: `NS`), the old value kept,
/// as memcached 1.6.18 answers (do_store_item: the new item cannot be allocated). Before, cache-node
/// answered `SERVER_ERROR object too large for cache`, which clients read as a server fault rather than
/// a refused append. The same bytes go to memcached.
#[test]
fn an_append_past_the_item_size_limit_is_not_stored_as_memcached() {
    let half = vec![b'h'; 600_000];
    let mut request = Vec::new();
    let mut with_half = |line: &str| {
        request.extend_from_slice(line.as_bytes());
        request.extend_from_slice(&half);
        request.extend_from_slice(b"\r\n");
    };
    with_half("set ap 0 0 600000\r\n");
    with_half("append ap 0 0 600000\r\n");
    with_half("prepend ap 0 0 600000\r\n");
    with_half("ms ap 600000 MA\r\n");
    with_half("ms ap 600000 MP q\r\n");
    request.extend_from_slice(b"mg ap s\r\nmn\r\n");
    let want: &[u8] = b"STORED\r\nNOT_STORED\r\nNOT_STORED\r\nNS\r\nNS\r\nHD s600000\r\nMN\r\n";
    both_answer(&request, want);
}
