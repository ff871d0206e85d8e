//! Arbitrary and near-valid bytes through real TCP connections to the server, so that the connection
//! code is fuzzed too, not only the parser (`protocol_fuzz.rs`): reading and buffering, swallowing the
//! data blocks of refused requests, the room held for values still arriving, batching replies. For
//! every input: the server answers and closes the connection when the client half-closes it (no hang),
//! every byte it writes is a well-formed memcached reply, and an item stored beforehand under a key the
//! input never names is still there, with the server answering other connections. Bounded: `CASES`
//! connections of at most a few KiB each, a few seconds in all (`PROPTEST_CASES=N` runs N instead).
//!
//! The input is requests of every dialect, well formed or not (wrong data lengths, long keys, values
//! over the limit, bad flags), one in four mutated (bytes deleted or inserted, a line with no end), in
//! runs of up to 24; 1,000 connections send about 1 MB, with stores, hits, leases, stats and errors of
//! every kind among the replies. How it fails: an `LVALUE` reply one byte longer than its data fails in
//! the first cases (the reply stream no longer parses), and a panic injected into `me` for one key fails
//! it through the panic hook (a connection that panics only drops its connection, which the replies
//! might not show). It does not know what each reply should be: `tcp.rs` and the memcached
//! differential tests pin that (the swallow of a refused block, for one).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_node::protocol::{parse_response, Limits, ParsedResponse, Response};
use common::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CASES: u32 = 1000;
/// The item size limit of the fuzzed server: small, so data blocks announced by the input end soon.
const MAX_VALUE_LEN: usize = 100;
/// The key stored before the cases, which no fragment can spell.
const KEPT_KEY: &str = "zz_kept";

/// Keys the requests use: few, so that they find each other's items. Never [`KEPT_KEY`].
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..5u8).prop_map(|k| format!("k{k}")),
        1 => Just("k".repeat(251)),
        1 => Just("YWJj".to_string()),
    ]
}

/// A value's announced length, and the data actually sent (now and then not that long).
fn data() -> impl Strategy<Value = (usize, Vec<u8>)> {
    (0usize..=MAX_VALUE_LEN + 20, any::<u8>(), 0u8..10).prop_map(|(len, fill, off)| {
        let sent = match off {
            0 => len + 1,
            1 => len.saturating_sub(1),
            _ => len,
        };
        (len, vec![b'a' + fill % 26; sent])
    })
}

/// One request of the text, meta or lease dialect, well formed but for the lengths `data` gets wrong
/// and what memcached refuses (long keys, values over the limit, bad flags).
fn request() -> impl Strategy<Value = Vec<u8>> {
    let noreply = prop_oneof![3 => Just(""), 1 => Just(" noreply")];
    let exptime = prop_oneof![Just("0"), Just("-1"), Just("5"), Just("2592001"), Just("x")];
    let meta_flags = prop::collection::vec(
        prop::sample::select(vec![
            "v", "k", "c", "f", "t", "s", "q", "h", "l", "u", "b", "N30", "T5", "R1", "I", "x",
            "MS", "ME", "MA", "MP", "MR", "MI", "MD", "E5", "C1", "F7", "O12", "D3", "J9", "Tabc",
            "!",
        ]),
        0..5,
    )
    .prop_map(|f| f.join(" "));
    let storage = (
        prop::sample::select(vec!["set", "add", "replace", "append", "prepend"]),
        key(),
        0u32..3,
        exptime.clone(),
        data(),
        noreply.clone(),
    )
        .prop_map(|(cmd, key, flags, exp, (len, data), noreply)| {
            let mut r = format!("{cmd} {key} {flags} {exp} {len}{noreply}\r\n").into_bytes();
            r.extend_from_slice(&data);
            r.extend_from_slice(b"\r\n");
            r
        });
    let cas = (key(), data(), 0u64..20, noreply.clone()).prop_map(|(key, (len, data), cas, nr)| {
        let mut r = format!("cas {key} 0 0 {len} {cas}{nr}\r\n").into_bytes();
        r.extend_from_slice(&data);
        r.extend_from_slice(b"\r\n");
        r
    });
    let meta_set = (key(), data(), meta_flags.clone()).prop_map(|(key, (len, data), flags)| {
        let mut r = format!("ms {key} {len} {flags}\r\n").into_bytes();
        r.extend_from_slice(&data);
        r.extend_from_slice(b"\r\n");
        r
    });
    let lease_set = (key(), 0u64..4, data()).prop_map(|(key, token, (len, data))| {
        let mut r = format!("lease-set {key} {token} 0 0 {len}\r\n").into_bytes();
        r.extend_from_slice(&data);
        r.extend_from_slice(b"\r\n");
        r
    });
    let line = (
        prop::sample::select(vec![
            "get",
            "gets",
            "gat 5",
            "gats 0",
            "delete",
            "incr",
            "decr",
            "touch",
            "mg",
            "md",
            "ma",
            "me",
            "lease-get",
        ]),
        prop::collection::vec(key(), 1..3),
        prop_oneof![
            Just(""),
            Just(" 7"),
            Just(" 18446744073709551615"),
            Just(" abc")
        ],
        meta_flags,
        noreply,
    )
        .prop_map(|(cmd, keys, number, flags, noreply)| {
            let line = match cmd {
                "incr" | "decr" | "touch" => format!("{cmd} {}{number}{noreply}", keys[0]),
                "delete" => format!("{cmd} {}{noreply}", keys[0]),
                "mg" | "md" | "ma" => format!("{cmd} {} {flags}", keys[0]),
                "me" | "lease-get" => format!("{cmd} {}", keys[0]),
                _ => format!("{cmd} {}", keys.join(" ")),
            };
            format!("{line}\r\n").into_bytes()
        });
    let other = prop::sample::select(vec![
        "mn\r\n",
        "version\r\n",
        "verbosity 1\r\n",
        "stats\r\n",
        "stats settings\r\n",
        "bogus\r\n",
        "\r\n",
        "quit\r\n",
    ])
    .prop_map(|l| l.as_bytes().to_vec());
    prop_oneof![
        4 => storage,
        1 => cas,
        3 => meta_set,
        1 => lease_set,
        6 => line,
        1 => other,
    ]
}

/// A request, mutated one time in four: a byte range deleted, arbitrary bytes inserted, or a run of
/// bytes with no line end.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    (
        request(),
        0u8..12,
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..8),
        0usize..300,
    )
        .prop_map(|(mut r, how, at, bytes, run)| {
            let i = at.index(r.len() + 1);
            match how {
                0 => {
                    r.drain(i..(i + bytes.len()).min(r.len()));
                }
                1 => {
                    r.splice(i..i, bytes);
                }
                2 => r.extend(std::iter::repeat_n(b'x', run)),
                _ => {}
            }
            r
        })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(mutated_request(), 0..24).prop_map(|requests| requests.concat())
}

/// Whether `line`, a reply line that is not a value, a stat or a meta reply, is one memcached sends.
fn known_line(line: &[u8]) -> bool {
    let line = std::str::from_utf8(line).unwrap_or("");
    matches!(
        line,
        "STORED" | "NOT_STORED" | "EXISTS" | "NOT_FOUND" | "DELETED" | "TOUCHED" | "OK" | "ERROR"
    ) || (!line.is_empty() && line.bytes().all(|b| b.is_ascii_digit()))
        || line.starts_with("VERSION ")
        || line.starts_with("CLIENT_ERROR ")
        || line.starts_with("SERVER_ERROR ")
}

/// Sends `input`, half-closes, and reads until the server closes: everything it wrote.
async fn exchange(server: &TestServer, input: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The server may close first (quit, or refusing garbage): a failed write is not a failure.
    let _ = stream.write_all(input).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        // A reset after a quit or a refused line, with replies still unread, loses no check: what
        // arrived is checked below.
        Ok(Err(_)) => Ok(out),
        Err(_) => Err(TestCaseError::fail(format!(
            "the connection did not end within 10 s after a half-close; {} bytes read",
            out.len()
        ))),
    }
}

fn check_replies(out: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits {
        max_value_len: MAX_VALUE_LEN,
        ..Limits::default()
    };
    let mut at = 0;
    while at < out.len() {
        match parse_response(&out[at..], &limits) {
            ParsedResponse::Response { response, consumed } => {
                if let Response::Line(line) = response {
                    prop_assert!(
                        known_line(line),
                        "unknown reply line {:?}",
                        String::from_utf8_lossy(line)
                    );
                }
                at += consumed;
            }
            other => {
                return Err(TestCaseError::fail(format!(
                    "{other:?} at byte {at} of the replies: {:?}",
                    String::from_utf8_lossy(&out[at..out.len().min(at + 200)])
                )))
            }
        }
    }
    Ok(())
}

async fn kept_item_answers(server: &TestServer) -> Result<(), TestCaseError> {
    let mut c = server.client().await;
    c.send(format!("get {KEPT_KEY}\r\nmn\r\n").as_bytes()).await;
    let want = format!("VALUE {KEPT_KEY} 7 4\r\nkept\r\nEND\r\nMN\r\n");
    let got = c.read_n(want.len()).await;
    prop_assert_eq!(String::from_utf8_lossy(&got), want);
    Ok(())
}

/// Panics anywhere in this process (the server runs in it), counted by a hook: a connection task or
/// thread that panics only drops its connection, which the replies alone might not show.
static PANICS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn arbitrary_bytes_over_a_connection() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(TestServer::start_with(|c| {
        c.limits.max_value_len = MAX_VALUE_LEN;
    }));
    rt.block_on(async {
        let mut c = server.client().await;
        c.expect(
            format!("set {KEPT_KEY} 7 0 4\r\nkept\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    });
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input(), |input| {
        rt.block_on(async {
            let panics_before = PANICS.load(Ordering::SeqCst);
            let out = exchange(&server, &input).await?;
            check_replies(&out)?;
            kept_item_answers(&server).await?;
            prop_assert_eq!(
                PANICS.load(Ordering::SeqCst),
                panics_before,
                "a panic while serving"
            );
            Ok(())
        })
    });
    rt.block_on(server.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
}
