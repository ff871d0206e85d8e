//! cache-node over real TCP (127.0.0.1, port 0): every command, noreply, pipelining, split requests, leases,
//! limits and bad input, TTL with a ManualClock, the maintainer (background expiry and its pacing), stats
//! and metrics.

mod common;

use std::time::Duration;

use common::{noreply_sets, poll_for_async, xorshift, Client, TestServer, START_UNIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type R = Result<(), Box<dyn std::error::Error>>;

// ------------------------------------------------------------------------------------------------
// Text protocol.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_and_retrieval_commands() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"get nothing\r\n", b"END\r\n").await;
    c.expect(b"set k 4294967295 0 5\r\nhello\r\n", b"STORED\r\n")
        .await;
    c.expect(b"get k\r\n", b"VALUE k 4294967295 5\r\nhello\r\nEND\r\n")
        .await;
    c.expect(b"set k 42 0 5\r\nhello\r\n", b"STORED\r\n").await;
    c.expect(b"add k 0 0 1\r\nx\r\n", b"NOT_STORED\r\n").await;
    c.expect(b"add k2 3 0 2\r\nab\r\n", b"STORED\r\n").await;
    c.expect(b"replace nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .await;
    c.expect(b"replace k2 4 0 2\r\ncd\r\n", b"STORED\r\n").await;
    c.expect(b"append k 0 0 3\r\n!!!\r\n", b"STORED\r\n").await;
    c.expect(b"prepend k 0 0 2\r\n<<\r\n", b"STORED\r\n").await;
    c.expect(b"append nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .await;
    c.expect(b"prepend nope 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")
        .await;
    // Multi-get keeps request order and skips misses; append/prepend keep the original flags.
    c.expect(
        b"get k nope k2\r\n",
        b"VALUE k 42 10\r\n<<hello!!!\r\nVALUE k2 4 2\r\ncd\r\nEND\r\n",
    )
    .await;
    // gets returns a CAS; cas with it stores once, a second time EXISTS.
    c.send(b"gets k2\r\n").await;
    let header = c.line().await;
    let cas: u64 = header.rsplit(' ').next().unwrap().parse()?;
    assert!(header.starts_with("VALUE k2 4 2 "), "{header}");
    c.expect_reply(b"cd\r\nEND\r\n").await;
    let req = format!("cas k2 5 0 2 {cas}\r\nef\r\n");
    c.expect(req.as_bytes(), b"STORED\r\n").await;
    c.expect(req.as_bytes(), b"EXISTS\r\n").await;
    c.expect(b"cas nope 0 0 1 1\r\nx\r\n", b"NOT_FOUND\r\n")
        .await;
    c.expect(b"get k2\r\n", b"VALUE k2 5 2\r\nef\r\nEND\r\n")
        .await;
    c.expect(b"delete k2\r\n", b"DELETED\r\n").await;
    c.expect(b"delete k2\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"delete k 0\r\n", b"DELETED\r\n").await;
    c.expect(b"get k k2\r\n", b"END\r\n").await;
    // Empty values are values.
    c.expect(b"set e 0 0 0\r\n\r\n", b"STORED\r\n").await;
    c.expect(b"get e\r\n", b"VALUE e 0 0\r\n\r\nEND\r\n").await;
    // As memcached 1.6.18, one token after the byte count is ignored unless it is noreply; with two the
    // line is an unknown command (checked against memcached by tests/memcached_diff.rs; before, any number
    // of extra tokens were ignored). Its data block is swallowed (memcached reads it as a command and
    // answers a second ERROR): without the swallow, `z` would come back as another ERROR line.
    c.expect(b"set x 0 0 1 extra\r\ny\r\n", b"STORED\r\n").await;
    c.expect(
        b"set x 0 0 1 extra noreply\r\nz\r\nget x\r\n",
        b"ERROR\r\nVALUE x 0 1\r\ny\r\nEND\r\n",
    )
    .await;
    assert_eq!(c.stat("cas_hits").await, "1");
    assert_eq!(c.stat("cas_badval").await, "1");
    assert_eq!(c.stat("cas_misses").await, "1");
    assert_eq!(c.stat("delete_hits").await, "2");
    assert_eq!(c.stat("delete_misses").await, "1");
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_decr_touch_and_misc() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"incr n 1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"decr n 1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"set n 7 0 2\r\n10\r\n", b"STORED\r\n").await;
    c.expect(b"incr n 5\r\n", b"15\r\n").await;
    c.expect(b"decr n 100\r\n", b"0\r\n").await;
    c.expect(b"set n 7 0 20\r\n18446744073709551615\r\n", b"STORED\r\n")
        .await;
    c.expect(b"incr n 2\r\n", b"1\r\n").await; // wraps at 2^64 as memcached
    c.expect(b"get n\r\n", b"VALUE n 7 1\r\n1\r\nEND\r\n").await;
    c.expect(b"set s 0 0 3\r\nabc\r\n", b"STORED\r\n").await;
    c.expect(
        b"incr s 1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;
    c.expect(
        b"incr n abc\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    )
    .await;
    c.expect(b"touch n 100\r\n", b"TOUCHED\r\n").await;
    c.expect(b"touch nope 100\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"version\r\n", b"VERSION ").await;
    let v = c.line().await;
    assert!(v.starts_with("1.6"), "{v}");
    c.expect(b"verbosity 1\r\n", b"OK\r\n").await;
    c.expect(b"verbosity\r\n", b"ERROR\r\n").await;
    c.expect(b"flush_all\r\n", b"OK\r\n").await;
    c.expect(b"get n s\r\n", b"END\r\n").await;
    c.expect(b"bogus\r\n", b"ERROR\r\n").await;
    c.expect(b"\r\n", b"ERROR\r\n").await;
    c.send(b"quit\r\n").await;
    assert!(c.closed().await, "quit closes the connection");
    s.stop().await;
    Ok(())
}

/// Every command that takes `noreply` answers nothing with it, whether it stored or not, and still does
/// its work. That includes mcrouter's `lease-set`: with its lease's token it stores, with another key's
/// token it is refused (the lease stays held), and neither writes `STORED` or `NOT_STORED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noreply_is_silent_for_every_command() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let leased = c.lease_get_miss("leased").await;
    let refused = c.lease_get_miss("refused").await;
    assert!(
        leased > 1 && refused > 1,
        "both leases won: {leased} {refused}"
    );
    let lease_sets = [
        format!("lease-set leased {leased} 3 0 1 noreply\r\nL\r\n"),
        // A valid token, but of another key's lease.
        format!("lease-set refused {leased} 3 0 1 noreply\r\nR\r\n"),
    ];
    for req in [
        &b"set a 0 0 1 noreply\r\n1\r\n"[..],
        b"add b 0 0 1 noreply\r\n2\r\n",
        b"add b 0 0 1 noreply\r\n9\r\n",
        b"replace b 0 0 1 noreply\r\n3\r\n",
        b"append b 0 0 1 noreply\r\n4\r\n",
        b"prepend b 0 0 1 noreply\r\n5\r\n",
        b"cas b 0 0 1 999 noreply\r\n6\r\n",
        b"incr a 10 noreply\r\n",
        b"decr a 1 noreply\r\n",
        b"touch a 0 noreply\r\n",
        b"delete nope noreply\r\n",
        b"verbosity 1 noreply\r\n",
        lease_sets[0].as_bytes(),
        lease_sets[1].as_bytes(),
        b"mn\r\n",
    ] {
        c.send(req).await;
    }
    // Only mn answers: every noreply request above stayed silent.
    c.expect_reply(b"MN\r\n").await;
    c.expect_silence().await;
    c.expect(
        b"get a b\r\n",
        b"VALUE a 0 2\r\n10\r\nVALUE b 0 3\r\n534\r\nEND\r\n",
    )
    .await;
    c.expect(
        b"get leased refused\r\n",
        b"VALUE leased 3 1\r\nL\r\nEND\r\n",
    )
    .await;
    // The refused set left the placeholder: its lease is still out, and its own token stores.
    c.expect(
        b"lease-get refused\r\n",
        b"LVALUE refused 1 0 0\r\n\r\nEND\r\n",
    )
    .await;
    assert_eq!(c.stat("lease_sets_stored").await, "1");
    assert_eq!(c.stat("lease_sets_refused").await, "1");
    c.send(format!("lease-set refused {refused} 3 0 1 noreply\r\nr\r\n").as_bytes())
        .await;
    c.expect(b"get refused\r\n", b"VALUE refused 3 1\r\nr\r\nEND\r\n")
        .await;
    c.send(b"flush_all noreply\r\n").await;
    c.expect(b"get a\r\n", b"END\r\n").await;
    c.expect_nothing_more().await;
    s.stop().await;
    Ok(())
}

/// A noreply request with bad arguments gets no error line either, as in memcached 1.6 (a noreply client
/// reads no reply and would take the line for the answer to its next request; libmemcached's `memcapable`
/// checks `verbosity noreply`). The item survives, a too-large value's block is still swallowed, and an
/// unknown command or a wrong token count still answers ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noreply_silences_argument_errors() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set a 0 0 1\r\n7\r\n", b"STORED\r\n").await;
    let long_key = "k".repeat(251);
    let too_large = format!(
        "set big 0 0 {} noreply\r\n{}\r\n",
        2 << 20,
        "x".repeat(2 << 20)
    );
    for req in [
        b"verbosity noreply\r\n".to_vec(),
        b"verbosity x noreply\r\n".to_vec(),
        b"incr a abc noreply\r\n".to_vec(),
        b"decr a noreply\r\n".to_vec(),
        format!("incr {long_key} 1 noreply\r\n").into_bytes(),
        b"touch a abc noreply\r\n".to_vec(),
        format!("touch {long_key} 0 noreply\r\n").into_bytes(),
        b"delete a 5 noreply\r\n".to_vec(),
        format!("delete {long_key} noreply\r\n").into_bytes(),
        b"flush_all abc noreply\r\n".to_vec(),
        b"set a abc 0 1 noreply\r\n8\r\n".to_vec(),
        b"set a 0 0 noreply\r\n".to_vec(),
        b"set a 0 0 1 noreply\r\n89\r\n".to_vec(),
        too_large.into_bytes(),
        b"mn\r\n".to_vec(),
    ] {
        c.send(&req).await;
    }
    // The bad data chunk leaves its last "\n" behind (memcached reads exactly the announced byte plus two,
    // "89\r"), an empty line: ERROR, as in memcached. Nothing else answers before mn.
    c.expect_reply(b"ERROR\r\nMN\r\n").await;
    c.expect_silence().await;
    c.expect(b"get a\r\n", b"VALUE a 0 1\r\n7\r\nEND\r\n").await;
    // Wrong token counts are still ERROR, noreply or not.
    c.expect(b"delete a 0 0 noreply\r\n", b"ERROR\r\n").await;
    c.expect(b"incr a 1 noreply extra\r\n", b"ERROR\r\n").await;
    // Without noreply the same mistakes are answered.
    c.expect(
        b"delete a 5\r\n",
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    )
    .await;
    c.expect(
        b"verbosity x\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect_nothing_more().await;
    s.stop().await;
    Ok(())
}

/// Connections are handed to the connection threads round-robin, as memcached does with its `-t` threads:
/// 32 connections on 2 threads are 16 and 16 (each thread counts the connections it serves in its own
/// counter slot). If the hand-over always picked one thread this would read 32 and 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_evenly_over_connection_threads() -> R {
    let s = TestServer::start_with(|c| c.connection_threads = 2).await;
    let mut clients = Vec::new();
    for _ in 0..32 {
        let mut c = s.client().await;
        // A reply proves the connection reached its thread and was counted there.
        c.send(b"version\r\n").await;
        assert!(c.line().await.starts_with("VERSION "));
        clients.push(c);
    }
    let per_thread: Vec<u64> = (0..2)
        .map(|i| {
            s.node
                .counters
                .slot(i)
                .total_connections
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    assert_eq!(per_thread, vec![16, 16]);
    drop(clients);
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batch_is_answered_in_order() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..200 {
        batch.extend_from_slice(
            format!(
                "set key{i} {i} 0 {}\r\nvalue{i}\r\n",
                5 + i.to_string().len()
            )
            .as_bytes(),
        );
        want.extend_from_slice(b"STORED\r\n");
    }
    for i in 0..200 {
        batch.extend_from_slice(format!("get key{i}\r\nmg key{i} v f\r\n").as_bytes());
        want.extend_from_slice(
            format!(
                "VALUE key{i} {i} {len}\r\nvalue{i}\r\nEND\r\nVA {len} f{i}\r\nvalue{i}\r\n",
                len = 5 + i.to_string().len()
            )
            .as_bytes(),
        );
    }
    c.expect(&batch, &want).await;
    s.stop().await;
    Ok(())
}

/// A request that arrives while the connection is blocked writing a large reply must still be answered.
/// The connection skips a read syscall by dropping the socket's read readiness after a short read; it
/// once did so after writing the replies, which also dropped readiness raised *during* a blocked write,
/// and the request below was never read (the test timed out with the old code: each read waits 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arriving_during_a_blocked_write_is_answered() -> R {
    request_during_blocked_write(TestServer::start().await).await
}

/// The same with work stealing (`connection_threads: 0`, connections on the test's multi-threaded
/// runtime, as the binary's `--work-stealing`), where another worker may poll the I/O driver while the
/// connection's task is blocked in its write. (The default, above, has single-threaded connection
/// runtimes, whose I/O driver runs only while the connection's task is suspended.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arriving_during_a_blocked_write_is_answered_with_work_stealing() -> R {
    request_during_blocked_write(TestServer::start_with(|c| c.connection_threads = 0).await).await
}

async fn request_during_blocked_write(s: TestServer) -> R {
    let mut c = s.client().await;
    let value = vec![b'w'; 500_000];
    c.send(b"set big 0 0 500000\r\n").await;
    c.send(&value).await;
    c.expect(b"\r\n", b"STORED\r\n").await;
    // 40 MB of replies: far more than the loopback socket buffers hold while the client does not read,
    // so the server's write blocks.
    c.send(&b"get big\r\n".repeat(80)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Arrives while the server waits to write; it must not be forgotten.
    c.send(b"mn\r\n").await;
    for _ in 0..80 {
        c.expect_reply(b"VALUE big 0 500000\r\n").await;
        assert_eq!(c.read_n(500_000).await, value);
        c.expect_reply(b"\r\nEND\r\n").await;
    }
    c.expect_reply(b"MN\r\n").await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_large_replies_are_written_in_bounded_batches() -> R {
    // 100 gets of a 100 KB value in one write: 10 MB of replies, which the connection writes out in
    // batches (MAX_BATCH_REPLY_BYTES) instead of building them all in memory first. The client reads them
    // all, in order.
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let value = vec![b'q'; 100_000];
    c.send(b"set big 0 0 100000\r\n").await;
    c.send(&value).await;
    c.expect(b"\r\n", b"STORED\r\n").await;
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend_from_slice(b"get big\r\n");
    }
    batch.extend_from_slice(b"mn\r\n");
    c.send(&batch).await;
    for _ in 0..100 {
        c.expect_reply(b"VALUE big 0 100000\r\n").await;
        assert_eq!(c.read_n(100_000).await, value);
        c.expect_reply(b"\r\nEND\r\n").await;
    }
    c.expect_reply(b"MN\r\n").await;
    s.stop().await;
    Ok(())
}

/// A multi-get whose reply passes the batch bound stops between keys, writes what it has and carries on
/// from the next key (`Flow::Unfinished`): the client gets the same bytes as from one reply, each key is
/// read, counted and touched once, and a request pipelined behind it is answered after its END. (The
/// bound itself, memory that stays flat however large the reply, is `tests/cli.rs`'s
/// `a_multi_get_of_large_values_is_streamed_not_built_in_memory`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_get_larger_than_a_batch_carries_on_where_it_stopped() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let big = |i: u8| vec![b'0' + i; 400_000];
    for i in 0..4u8 {
        c.send(format!("set big{i} {i} 0 400000\r\n").as_bytes())
            .await;
        c.send(&big(i)).await;
        c.expect(b"\r\n", b"STORED\r\n").await;
    }
    c.expect(b"set small 0 100 1\r\nx\r\n", b"STORED\r\n").await;
    // 4 x 400 KB = 1.6 MB with misses and a repeated key around the places it must stop (after the
    // third large value, past 1 MiB); gat also touches every key it finds.
    let keys = [
        "big0", "nope1", "big1", "small", "big2", "nope2", "big3", "small", "big0", "nope3",
    ];
    c.send(format!("gat 500 {}\r\nmn\r\n", keys.join(" ")).as_bytes())
        .await;
    let mut hits = 0;
    for key in keys {
        let value = match key {
            "small" => b"x".to_vec(),
            k if k.starts_with("big") => big(k.as_bytes()[3] - b'0'),
            _ => continue,
        };
        hits += 1;
        let flags = if key == "small" { 0 } else { value[0] - b'0' };
        c.expect_reply(format!("VALUE {key} {flags} {}\r\n", value.len()).as_bytes())
            .await;
        assert_eq!(c.read_n(value.len()).await, value, "{key}");
        c.expect_reply(b"\r\n").await;
    }
    c.expect_reply(b"END\r\nMN\r\n").await;
    // Each key counted once across the stops; gat counts touches, not gets, as memcached's does.
    assert_eq!(c.stat("cmd_touch").await, keys.len().to_string());
    assert_eq!(c.stat("touch_hits").await, hits.to_string());
    assert_eq!(
        c.stat("touch_misses").await,
        (keys.len() - hits).to_string()
    );
    assert_eq!(c.stat("cmd_get").await, "0");
    // Each touch took: 400 s on, `small` (set to expire at 100 s) is there with 100 s left of gat's 500.
    s.clock.advance(400);
    c.expect(b"mg small t\r\n", b"HD t100\r\n").await;
    s.stop().await;
    Ok(())
}

/// A script of requests covering every parser path with a data block; sent split at every byte boundary.
/// Every command of the text, meta and lease dialects once, with `noreply`, a wrong CAS, a wrong
/// lease token, an unknown command, a malformed line and a bad key with a data block to swallow; `mn`
/// last. Sent whole, split at every byte and one byte per write, it must get the same replies.
fn split_script() -> Vec<u8> {
    let long_key = "k".repeat(251);
    [
        "set a 1 0 3\r\nabc\r\n",
        "add a 0 0 1\r\nx\r\n",
        "add b 2 0 2\r\nbb\r\n",
        "replace b 3 0 3\r\nBBB\r\n",
        "prepend a 0 0 2\r\n<<\r\n",
        "append a 0 0 2\r\n>>\r\n",
        "get a b\r\n",
        "gets a\r\n",
        "cas a 0 0 1 1\r\nz\r\n",
        "set n 0 0 2 noreply\r\n10\r\n",
        "incr n 5\r\n",
        "decr n 20\r\n",
        "touch a 100\r\n",
        "gat 200 a\r\n",
        "gats 300 b\r\n",
        "delete b\r\n",
        "delete b noreply\r\n",
        "ms m 2 T0 F5\r\nhi\r\n",
        "mg m v f c t\r\n",
        "ma n MI D3 v\r\n",
        "md m q\r\n",
        "mg m k\r\n",
        "lease-get L\r\n",
        "lease-set L 1 0 0 1\r\nx\r\n",
        "verbosity 1\r\n",
        "bogus\r\n",
        "set k 0 0 x\r\n",
        &format!("set {long_key} 0 0 1\r\nv\r\n"),
        "flush_all\r\n",
        "get a\r\n",
        "mn\r\n",
    ]
    .concat()
    .into_bytes()
}

/// The script's replies, with what differs from run to run masked: CAS values (`gets`/`gats`' fifth
/// field, meta `c`) and lease tokens (`LVALUE`'s third). Everything else, flags and lengths included,
/// must match exactly.
fn masked_lines(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .split("\r\n")
        .map(|line| {
            let mut tokens: Vec<String> = line.split(' ').map(str::to_string).collect();
            match tokens[0].as_str() {
                "VALUE" if tokens.len() == 5 => tokens[4] = "#".into(),
                "LVALUE" if tokens.len() == 5 => tokens[2] = "#".into(),
                "VA" | "HD" | "EN" | "NS" | "EX" | "NF" => {
                    for t in tokens.iter_mut().skip(1) {
                        if t.len() > 1
                            && t.starts_with('c')
                            && t[1..].bytes().all(|b| b.is_ascii_digit())
                        {
                            *t = "c#".into();
                        }
                    }
                }
                _ => {}
            }
            tokens.join(" ")
        })
        .collect()
}

/// Sends `script` to a fresh key space in the given pieces and reads the replies through `MN`.
async fn script_reply(s: &TestServer, pieces: &[&[u8]]) -> Vec<u8> {
    let mut c = s.client().await;
    c.send(b"flush_all\r\n").await;
    c.expect_reply(b"OK\r\n").await;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        c.send(piece).await;
    }
    let mut reply = Vec::new();
    loop {
        let l = c.line().await;
        reply.extend_from_slice(l.as_bytes());
        reply.extend_from_slice(b"\r\n");
        if l == "MN" {
            return reply;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_at_every_byte_boundary() -> R {
    let s = TestServer::start().await;
    let script = split_script();
    let reference = masked_lines(&script_reply(&s, &[&script]).await);
    // The replies the script must get, so that a reply wrong in the same way whole and split does not
    // pass: memcached 1.6.18's (checked by hand, 2026-12-01), CAS values and the lease token masked,
    // but for mcrouter's lease-get/lease-set, which it lacks, and the bad key's data block, which
    // memcached reads as a command (`ERROR`) and cache-node swallows (SERVER.md, "Known differences").
    let expected = [
        "STORED",
        "NOT_STORED",
        "STORED",
        "STORED",
        "STORED",
        "STORED",
        "VALUE a 1 7",
        "<<abc>>",
        "VALUE b 3 3",
        "BBB",
        "END",
        "VALUE a 1 7 #",
        "<<abc>>",
        "END",
        "EXISTS",
        "15",
        "0",
        "TOUCHED",
        "VALUE a 1 7",
        "<<abc>>",
        "END",
        "VALUE b 3 3 #",
        "BBB",
        "END",
        "DELETED",
        "HD",
        "VA 2 f5 c# t-1",
        "hi",
        "VA 1",
        "3",
        "EN km",
        "LVALUE L # 0 0",
        "",
        "END",
        "NOT_STORED",
        "OK",
        "ERROR",
        "CLIENT_ERROR bad command line format",
        "CLIENT_ERROR bad command line format",
        "OK",
        "END",
        "MN",
        "",
    ];
    assert_eq!(reference, expected);
    for split in 1..script.len() {
        let reply = script_reply(&s, &[&script[..split], &script[split..]]).await;
        assert_eq!(masked_lines(&reply), reference, "split at byte {split}");
    }
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    let reply = script_reply(&s, &bytes).await;
    assert_eq!(masked_lines(&reply), reference, "one byte per write");
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Meta protocol.

/// The meta `E` flag (later memcached's "use this as the new CAS") on every path that makes a CAS, not
/// only `ms`: an `mg N` placeholder (the winner's token, which its `ms C` then matches), `md I` (the stale
/// item's new CAS), `md x` (the emptied item), and `ma` creating and changing a counter. `E0` is refused
/// everywhere (CAS 0 means none), in each command's words. A path that ignored `E` would show a CAS of
/// its own here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_e_sets_the_cas_on_every_path() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"mg e1 N30 E77 c v\r\n", b"VA 0 c77 W\r\n\r\n")
        .await;
    c.expect(b"mg e1 c v\r\n", b"VA 0 c77 Z\r\n\r\n").await;
    c.expect(b"ms e1 1 C77 E78 c\r\nx\r\n", b"HD c78\r\n").await;
    c.expect(b"set e2 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    c.expect(b"md e2 I E88\r\n", b"HD\r\n").await;
    c.expect(b"mg e2 c v\r\n", b"VA 1 c88 X W\r\nv\r\n").await;
    c.expect(b"set e3 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    c.expect(b"md e3 x E99\r\n", b"HD\r\n").await;
    c.expect(b"mg e3 c v\r\n", b"VA 0 c99\r\n\r\n").await;
    c.expect(b"ma e4 N0 J5 E55 c v\r\n", b"VA 1 c55\r\n5\r\n")
        .await;
    c.expect(b"ma e4 E56 c\r\n", b"HD c56\r\n").await;
    c.expect(b"mg e4 c v\r\n", b"VA 1 c56\r\n6\r\n").await;
    for (request, refused) in [
        (
            &b"md e4 E0\r\n"[..],
            &b"CLIENT_ERROR invalid or duplicate flag\r\n"[..],
        ),
        (
            b"ma e4 E0\r\n",
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (
            b"mg e4 E0\r\n",
            b"CLIENT_ERROR bad token in command line format\r\n",
        ),
    ] {
        c.expect(request, refused).await;
    }
    c.expect(b"mg e4 c v\r\n", b"VA 1 c56\r\n6\r\n").await;
    c.expect_nothing_more().await;
    s.stop().await;
    Ok(())
}

/// A CAS number is taken by what stores an item (even one that expires at once), marks one stale (`md
/// I`) or flushes now, as memcached 1.6 (`do_item_link`, `ITEM_set_cas`, `oldest_cas`): a refused `ms`,
/// a miss, a mismatch, a plain delete, a touch or an `mg N` hit takes none. The numbers below are
/// memcached 1.6.18's, read the same way (the CAS of an item stored after each step). Before, every `ms`,
/// `ma` and `md` took one whatever its outcome, and `mg N` one on a hit, so a CAS literal named an item
/// on one server and none on the other (the differential test's run-first-case failures); that code
/// fails here at the first step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_stores_takes_a_cas_number() -> R {
    let s = TestServer::start_with(|c| c.first_cas = 0).await;
    let mut c = s.client().await;
    let steps: &[(&str, &str, u64)] = &[
        ("ms a 1 C5\r\nv", "NF", 0),
        ("ms a 1 MA\r\nv", "NS", 0),
        ("ms a 1 ME\r\nv", "HD", 1),
        ("mg a N30", "HD", 0),
        ("ms a 1\r\nv", "HD", 1),
        ("ms a 1 ME\r\nv", "NS", 0),
        ("md a C999 I", "EX", 0),
        ("md zz I", "NF", 0),
        ("md a I", "HD", 1),
        ("ma zz", "NF", 0),
        ("ma zz N0", "HD", 1),
        ("ma zz", "HD", 1),
        ("ma zz C999", "EX", 0),
        ("ms t 1\r\nv", "HD", 1),
        (
            "ma t",
            "CLIENT_ERROR cannot increment or decrement non-numeric value",
            0,
        ),
        ("md a", "HD", 0),
        ("md a", "NF", 0),
        ("mg q N30", "HD W", 1),
        ("md q C999", "EX", 0),
        ("md q I T-1", "HD", 1),
        ("mg q", "EN", 0),
        ("set e 0 -1 1\r\nv", "STORED", 1),
        ("ms e 1 T-1\r\nv", "HD", 1),
        ("add t 0 0 1\r\nv", "NOT_STORED", 0),
        ("cas t 0 0 1 999\r\nv", "EXISTS", 0),
        ("incr nn 1", "NOT_FOUND", 0),
        ("set n 0 0 1\r\n5", "STORED", 1),
        ("incr n 1", "6", 1),
        ("append zz3 0 0 1\r\nv", "NOT_STORED", 0),
        ("append n 0 0 1\r\n0", "STORED", 1),
        ("touch n 100", "TOUCHED", 0),
        ("delete n", "DELETED", 0),
        ("flush_all 60", "OK", 0),
        ("flush_all", "OK", 1),
        ("ms a 1 MS C1\r\nv", "NF", 0),
    ];
    let mut last = 0;
    for (i, &(request, reply, taken)) in steps.iter().enumerate() {
        c.expect(
            format!("{request}\r\n").as_bytes(),
            format!("{reply}\r\n").as_bytes(),
        )
        .await;
        c.send(format!("ms probe{i} 1 c\r\nv\r\n").as_bytes()).await;
        let line = c.line().await;
        let cas: u64 = line.strip_prefix("HD c").ok_or(line.clone())?.parse()?;
        assert_eq!(cas - last - 1, taken, "CAS numbers taken by {request:?}");
        last = cas;
    }
    c.expect_nothing_more().await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_commands() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"mg k v\r\n", b"EN\r\n").await;
    c.expect(b"mg k v q\r\nmn\r\n", b"MN\r\n").await;
    c.expect(b"mg k k Oab\r\n", b"EN kk Oab\r\n").await;
    c.expect(b"ms k 2 F9 T0\r\nhi\r\n", b"HD\r\n").await;
    c.expect(b"ms k 2 q\r\nhi\r\nmn\r\n", b"MN\r\n").await;
    c.send(b"ms k 2 c F9\r\nhi\r\n").await;
    let l = c.line().await;
    let cas: u64 = l.strip_prefix("HD c").expect(&l).parse()?;
    c.expect(
        b"mg k s v f t k O123\r\n",
        b"VA 2 s2 f9 t-1 kk O123\r\nhi\r\n",
    )
    .await;
    c.expect(b"mg k c\r\n", format!("HD c{cas}\r\n").as_bytes())
        .await;
    c.expect(b"mg k\r\n", b"HD\r\n").await;
    c.expect(b"mg k h l\r\n", b"HD h1 l0\r\n").await;
    // Modes.
    c.expect(b"ms k 1 ME\r\nx\r\n", b"NS\r\n").await;
    c.expect(b"ms n 1 MR\r\nx\r\n", b"NS\r\n").await;
    c.expect(b"ms k 1 MA\r\n!\r\n", b"HD\r\n").await;
    c.expect(b"ms k 1 MP\r\n<\r\n", b"HD\r\n").await;
    c.expect(b"mg k v\r\n", b"VA 4\r\n<hi!\r\n").await;
    c.expect(b"ms k 1 C1\r\nx\r\n", b"EX\r\n").await;
    c.expect(b"ms nope 1 C1\r\nx\r\n", b"NF\r\n").await;
    c.expect(b"ms k 1 E5000\r\nz\r\n", b"HD\r\n").await;
    c.expect(b"mg k c v\r\n", b"VA 1 c5000\r\nz\r\n").await;
    c.expect(b"ms k 1 C5000 c E6000\r\ny\r\n", b"HD c6000\r\n")
        .await;
    // Touch through mg T; t shows the new TTL.
    c.expect(b"mg k T30 t\r\n", b"HD t30\r\n").await;
    // Arithmetic.
    c.expect(b"ma cnt\r\n", b"NF\r\n").await;
    c.expect(b"ma cnt N0 J10 v\r\n", b"VA 2\r\n10\r\n").await;
    c.expect(b"ma cnt v D5\r\n", b"VA 2\r\n15\r\n").await;
    c.expect(b"ma cnt MD D20 v\r\n", b"VA 1\r\n0\r\n").await;
    c.expect(b"ma cnt q\r\nmn\r\n", b"MN\r\n").await;
    c.expect(b"ma cnt v t\r\n", b"VA 1 t-1\r\n2\r\n").await;
    c.expect(
        b"ma k\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;
    // Delete.
    c.expect(b"md cnt C1\r\n", b"EX\r\n").await;
    c.expect(b"md cnt q\r\nmn\r\n", b"MN\r\n").await;
    c.expect(b"md cnt\r\n", b"NF\r\n").await;
    c.expect(b"md k k Oxy\r\n", b"HD kk Oxy\r\n").await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    // Base64 keys: "Zm9v" is "foo"; the text get sees the same key.
    c.expect(b"ms Zm9v 3 b\r\nbar\r\n", b"HD\r\n").await;
    c.expect(b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n")
        .await;
    // `b` follows the key it qualifies, wherever it was asked, as memcached 1.6.18 (before: `VA 3 b kZm9v`).
    c.expect(b"mg Zm9v b k v\r\n", b"VA 3 kZm9v b\r\nbar\r\n")
        .await;
    c.expect(b"mg Zm9v b v\r\n", b"VA 3\r\nbar\r\n").await;
    c.expect(b"mg Zm9v k O1 b\r\n", b"HD kZm9v b O1\r\n").await;
    // md x keeps the item but drops the value.
    c.expect(b"md foo x\r\n", b"HD\r\n").await;
    c.expect(b"mg foo s v\r\n", b"VA 0 s0\r\n\r\n").await;
    // me shows item facts.
    c.send(b"me foo\r\n").await;
    let l = c.line().await;
    assert!(l.starts_with("ME foo exp=-1 la=0 cas="), "{l}");
    // Flag errors.
    c.expect(b"mg k v v\r\n", b"CLIENT_ERROR duplicate flag\r\n")
        .await;
    c.expect(b"mg k !\r\n", b"CLIENT_ERROR invalid flag\r\n")
        .await;
    c.expect(
        b"mg k Tabc\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    )
    .await;
    // Five base64 characters make no whole group: memcached 1.6.18's own line (a byte outside the
    // alphabet it skips, as `Zm9v!` is `foo`).
    c.expect(b"mg Zm9v= b\r\n", b"CLIENT_ERROR error decoding key\r\n")
        .await;
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: memcached 1.6.18 answers a keyless `mg`/`ms`/`md`/`ma` as an unknown
/// command (`ERROR`), but `ms KEY` without a length and a keyless `me` as a bad line. Before the fix all
/// five were `CLIENT_ERROR bad command line format`. And its flag errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_answer_as_memcached() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    for keyless in [&b"mg\r\n"[..], b"ms\r\n", b"md\r\n", b"ma\r\n", b"mg \r\n"] {
        c.expect(keyless, b"ERROR\r\n").await;
    }
    c.expect(b"ms k\r\n", b"CLIENT_ERROR bad command line format\r\n")
        .await;
    c.expect(b"me\r\n", b"CLIENT_ERROR bad command line format\r\n")
        .await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    // md and ma answer an unknown or repeated flag with one line, mg and ms with two (before the fix, md
    // and ma used mg's).
    for (req, reply) in [
        (
            &b"md k !\r\n"[..],
            &b"CLIENT_ERROR invalid or duplicate flag\r\n"[..],
        ),
        (
            b"ma k q q\r\n",
            b"CLIENT_ERROR invalid or duplicate flag\r\n",
        ),
        (b"mg k !\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"mg k v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
        (b"ms k 1 !\r\na\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"ms k 1 c c\r\na\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    ] {
        c.expect(req, reply).await;
    }
    // Text: a bad exptime of touch/gat (before: bad command line format); a second token after a storage
    // command's arguments makes an unknown command whose data block is swallowed (before: stored;
    // memcached reads the block as a command and answers ERROR twice).
    c.expect(
        b"touch k abc\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    )
    .await;
    c.expect(
        b"gat abc k\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    )
    .await;
    c.expect(b"set k 0 0 1 noreply extra\r\n7\r\n", b"ERROR\r\n")
        .await;
    c.expect(b"set k 0 0 1 extra\r\n7\r\n", b"STORED\r\n").await;
    c.expect(b"incr k 1 extra\r\n", b"8\r\n").await;
    // Leading zeros, however many, as memcached's strtoull (before: over 20 digits was refused).
    c.expect(b"incr k 00000000000000000000001\r\n", b"9\r\n")
        .await;
    c.expect(
        b"incr k 000000000000000000000018446744073709551616\r\n",
        b"CLIENT_ERROR invalid numeric delta argument\r\n",
    )
    .await;
    // mcrouter's lease-set takes only `noreply` there: another token is an unknown command, and its
    // data block is swallowed too (before: `abc` was read as a command, a second ERROR).
    c.expect(b"lease-set k 5 0 0 3 x\r\nabc\r\n", b"ERROR\r\n")
        .await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: `ma KEY N<ttl> T<ttl>` creating the item gives it T's TTL, as
/// memcached 1.6.18 does (T is "update the TTL on success"); without T, N's. Before the fix the created
/// item kept N's TTL (`t3600` / `t-1` below) and `N0 T-1` left a live item. Also C0 and q as memcached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_arith_ttl_cas_and_quiet_as_memcached() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"ma a N3600 T0 t\r\n", b"HD t-1\r\n").await;
    c.expect(b"ma b N0 T3600 t\r\n", b"HD t3600\r\n").await;
    c.expect(b"ma c N3600 t\r\n", b"HD t3600\r\n").await;
    c.expect(b"ma d N0 T-1\r\n", b"HD\r\n").await;
    c.expect(b"mg d v\r\n", b"EN\r\n").await;
    // C0 compares nothing in ma, as memcached (before the fix: EX).
    c.expect(b"ma c C0 v\r\n", b"VA 1\r\n1\r\n").await;
    c.expect(b"ma c C1 v\r\n", b"EX\r\n").await;
    // An empty value is refused before the CAS is compared (before the fix: EX), another non-numeric one
    // after.
    c.expect(b"ms empty 0\r\n\r\n", b"HD\r\n").await;
    c.expect(
        b"ma empty C1\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    )
    .await;
    c.expect(b"ms text 1\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"ma text C1\r\n", b"EX\r\n").await;
    // q hides an incr's success even with v, but not the reply of the ma that creates the item, as
    // memcached (before the fix: `VA 1 / 2` for the first, nothing for the second).
    c.expect(b"ma c q v\r\nmn\r\n", b"MN\r\n").await;
    c.expect(b"ma e q N0\r\n", b"HD\r\n").await;
    c.expect(b"ma f q N0 v\r\n", b"VA 1\r\n0\r\n").await;
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: `ms` with `C` follows memcached 1.6.18 per mode. Add (`ME`) ignores
/// C; append/prepend on a missing item are NS (not NF) and compare C with an item that is there; set and
/// replace are a CAS (NF, EX). Before the fix every mode answered NF on a missing item and add EX on a
/// present one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_set_compare_cas_follows_the_mode() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"ms a1 1 C5 ME\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"ms a2 1 C5 MA\r\nx\r\n", b"NS\r\n").await;
    c.expect(b"ms a3 1 C5 MP\r\nx\r\n", b"NS\r\n").await;
    c.expect(b"ms a4 1 C5 MR\r\nx\r\n", b"NF\r\n").await;
    c.expect(b"ms a5 1 C5 MS\r\nx\r\n", b"NF\r\n").await;
    c.expect(b"ms b 1 c\r\ny\r\n", b"HD c").await;
    let cas = c.line().await;
    c.expect(b"ms b 1 C999999 ME\r\nx\r\n", b"NS\r\n").await;
    for mode in ["MA", "MP", "MR", "MS"] {
        c.expect(
            format!("ms b 1 C999999 {mode}\r\nx\r\n").as_bytes(),
            b"EX\r\n",
        )
        .await;
    }
    c.expect(format!("ms b 1 C{cas} MA\r\nz\r\n").as_bytes(), b"HD\r\n")
        .await;
    c.expect(b"mg b v\r\n", b"VA 2\r\nyz\r\n").await;
    // Append/prepend take C0 as no CAS (before the fix: EX); set compares it.
    c.expect(b"ms b 1 C0 MP\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"ms b 1 C0 MS\r\nx\r\n", b"EX\r\n").await;
    c.expect(b"mg b v\r\n", b"VA 3\r\nxyz\r\n").await;
    // A refused ms stored nothing: its c is 0, as memcached (before the fix: the unused new CAS).
    c.expect(b"ms b 1 c ME\r\nx\r\n", b"NS c0\r\n").await;
    c.expect(b"ms b 1 c C1 MS\r\nx\r\n", b"EX c0\r\n").await;
    c.expect(b"ms none 1 c MR\r\nx\r\n", b"NS c0\r\n").await;
    // Set-to-invalid (I) with an older CAS stores a stale item, but C0 is refused, as memcached (before
    // the fix: HD and a stale item).
    c.expect(b"ms b 1 C0 I\r\nw\r\n", b"EX\r\n").await;
    c.expect(b"ms b 1 C1 I\r\nw\r\n", b"HD\r\n").await;
    c.expect(b"mg b v\r\n", b"VA 1 X W\r\nw\r\n").await;
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: the `mg N` miss that creates a lease placeholder is its first fetch, so
/// the next reader's `h` is 1, as memcached 1.6.18. Before the fix it was `h0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_placeholder_was_fetched_by_its_winner() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"mg k N30 h\r\n", b"HD h0 W\r\n").await;
    c.expect(b"mg k h\r\n", b"HD h1 Z\r\n").await;
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: incr/decr read a value as memcached 1.6.18's `safe_strtoull` does:
/// leading whitespace and `+` allowed, digits, then the end or whitespace and anything. Before the fix only
/// digits with trailing spaces were a number, so `incr` after appending to memcached-style padding failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_read_as_memcached_reads_them() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    for (value, reply) in [
        (&b" 5"[..], &b"6\r\n"[..]),
        (b"+5", b"6\r\n"),
        (b"5 xy", b"6\r\n"),
        (b"5\tx", b"6\r\n"),
        (b"7  a", b"8\r\n"),
        (
            b"5x",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (
            b" ",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (
            b"-1",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        (
            b"18446744073709551616",
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
    ] {
        let mut set = format!("set n 0 0 {}\r\n", value.len()).into_bytes();
        set.extend_from_slice(value);
        set.extend_from_slice(b"\r\n");
        c.expect(&set, b"STORED\r\n").await;
        c.expect(b"incr n 1\r\n", reply).await;
    }
    s.stop().await;
    Ok(())
}

/// Found by tests/memcached_diff.rs: a set-to-invalid (`ms C<older> I`) keeps the replaced item's TTL and
/// its token-sent bit, as memcached 1.6.18, so the reader that won the lease stays the only winner. Before
/// the fix the stale item took the ms's T and handed out a second W.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_to_invalid_keeps_ttl_and_the_lease_winner() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"mg k N30\r\n", b"HD W\r\n").await;
    c.expect(b"ms k 1 C1 I T500\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"mg k v t\r\n", b"VA 1 t30 Z X\r\nx\r\n").await;
    c.expect(b"ms j 1 T100\r\na\r\n", b"HD\r\n").await;
    c.expect(b"ms j 1 C1 I T500\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"mg j v t\r\n", b"VA 1 t100 X W\r\nx\r\n").await;
    // Even a T that would expire it at once (before the fix: the item was removed).
    c.expect(b"ms j 1 C1 I T-1\r\ny\r\n", b"HD\r\n").await;
    // (The reader before won, so this one is Z.)
    c.expect(b"mg j v t\r\n", b"VA 1 t100 Z X\r\ny\r\n").await;
    s.stop().await;
    Ok(())
}

/// Client flags are stored only when nonzero (a flagless item has no flags field). Every command
/// that updates an item in place (touch, gat, mg T, md I) or rewrites it (incr/decr, append,
/// prepend, ms MA, cas, ma) keeps them, for flags 0, 1 and u32::MAX side by side, and a set can
/// add or drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_flags_survive_every_update() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    for (key, flags) in [("z", 0u32), ("one", 1), ("max", u32::MAX)] {
        let req = |r: &str| r.replace("{k}", key).replace("{f}", &flags.to_string());
        c.expect(req("set {k} {f} 0 2\r\n10\r\n").as_bytes(), b"STORED\r\n")
            .await;
        c.expect(req("touch {k} 100\r\n").as_bytes(), b"TOUCHED\r\n")
            .await;
        c.expect(
            req("gat 200 {k}\r\n").as_bytes(),
            req("VALUE {k} {f} 2\r\n10\r\nEND\r\n").as_bytes(),
        )
        .await;
        c.expect(req("mg {k} T300\r\n").as_bytes(), b"HD\r\n").await;
        c.expect(req("incr {k} 5\r\n").as_bytes(), b"15\r\n").await;
        c.expect(req("decr {k} 1\r\n").as_bytes(), b"14\r\n").await;
        c.expect(req("append {k} 0 0 1\r\n!\r\n").as_bytes(), b"STORED\r\n")
            .await;
        c.expect(req("prepend {k} 0 0 1\r\n<\r\n").as_bytes(), b"STORED\r\n")
            .await;
        c.expect(req("ms {k} 1 MA\r\nx\r\n").as_bytes(), b"HD\r\n")
            .await;
        c.expect(
            req("mg {k} f v t\r\n").as_bytes(),
            req("VA 5 f{f} t300\r\n<14!x\r\n").as_bytes(),
        )
        .await;
        c.send(req("gets {k}\r\n").as_bytes()).await;
        let header = c.line().await;
        assert!(header.starts_with(&req("VALUE {k} {f} 5 ")), "{header}");
        let cas: u64 = header.rsplit(' ').next().unwrap().parse()?;
        c.expect_reply(b"<14!x\r\nEND\r\n").await;
        c.expect(
            format!("cas {key} {flags} 0 2 {cas}\r\n41\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
        c.expect(req("ma {k}\r\n").as_bytes(), b"HD\r\n").await;
        // Marked stale in place: text gets no longer see it, mg does (X), flags and value kept.
        c.expect(req("md {k} I\r\n").as_bytes(), b"HD\r\n").await;
        c.send(req("mg {k} f v\r\n").as_bytes()).await;
        let header = c.line().await;
        assert!(header.starts_with(&req("VA 2 f{f} ")), "{header}");
        assert!(header.split(' ').any(|t| t == "X"), "{header}");
        c.expect_reply(b"42\r\n").await;
    }
    // A set adds or drops the flags field.
    c.expect(b"set z 7 0 1\r\na\r\n", b"STORED\r\n").await;
    c.expect(b"set max 0 0 1\r\nb\r\n", b"STORED\r\n").await;
    c.expect(
        b"get z max\r\n",
        b"VALUE z 7 1\r\na\r\nVALUE max 0 1\r\nb\r\nEND\r\n",
    )
    .await;
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Leases.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_misses_give_one_winner() -> R {
    let s = TestServer::start().await;
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.send(b"mg hot v c N30\r\n").await;
            let l = c.line().await;
            let _ = c.line().await; // empty value line
            l
        }));
    }
    let mut winners = 0;
    let mut waiters = 0;
    for t in tasks {
        let l = t.await?;
        let flags: Vec<&str> = l.split(' ').collect();
        assert_eq!(&flags[..2], ["VA", "0"], "{l}");
        if flags.contains(&"W") {
            winners += 1;
        }
        if flags.contains(&"Z") {
            waiters += 1;
        }
    }
    // Without the win_sent bit (every miss vivifying its own placeholder) winners would be ~300.
    assert_eq!((winners, waiters), (1, 299));
    let mut c = s.client().await;
    assert_eq!(c.stat("lease_grants").await, "1");
    assert_eq!(c.stat("lease_hot_misses").await, "299");
    s.stop().await;
    Ok(())
}

/// The same race in mcrouter's dialect: 200 clients that `lease-get` one missing key at once get one
/// lease between them. A miss answers `LVALUE KEY TOKEN FLAGS BYTES`, where the token 1 means another
/// client holds the lease; exactly one reply carries a real token, and it is the one that stores. If
/// each miss made its own placeholder (no check of `win_sent` under the entry's lock), every client
/// would get a token and this would count ~200 winners.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_concurrent_lease_gets_give_one_token() -> R {
    let s = TestServer::start().await;
    let clients: usize = 200;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            Client::connect(addr).await.lease_get_miss("hot").await
        }));
    }
    let mut tokens = Vec::new();
    let mut waiters = 0;
    for t in tasks {
        let token = t.await?;
        if token == 1 {
            waiters += 1;
        } else {
            tokens.push(token);
        }
    }
    assert_eq!(
        (tokens.len(), waiters),
        (1, clients - 1),
        "first tokens {:?}",
        &tokens[..tokens.len().min(3)]
    );
    let mut c = s.client().await;
    assert_eq!(c.stat("lease_grants").await, "1");
    assert_eq!(c.stat("lease_hot_misses").await, (clients - 1).to_string());
    c.expect(
        format!("lease-set hot {} 0 0 3\r\nnew\r\n", tokens[0]).as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"lease-get hot\r\n", b"VALUE hot 0 3\r\nnew\r\nEND\r\n")
        .await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_set_after_invalidation_is_refused() -> R {
    let s = TestServer::start().await;
    let mut reader = s.client().await;
    let mut invalidator = s.client().await;
    // 1. A miss wins the lease.
    reader.send(b"mg user:1 v c N30\r\n").await;
    let l = reader.line().await;
    assert!(l.ends_with(" W"), "{l}");
    let token = cas_of(&l);
    reader.expect_reply(b"\r\n").await;
    // 2. The row changes; the invalidation deletes the key (and with it the lease).
    invalidator.expect(b"md user:1\r\n", b"HD\r\n").await;
    // 3. The reader's value, read from the database before the change, arrives late: refused.
    reader
        .expect(
            format!("ms user:1 3 C{token}\r\nold\r\n").as_bytes(),
            b"NF\r\n",
        )
        .await;
    reader.expect(b"mg user:1 v\r\n", b"EN\r\n").await;
    // Same with a new lease already out: the old token no longer matches.
    reader.send(b"mg user:1 v c N30\r\n").await;
    let l = reader.line().await;
    let token2 = cas_of(&l);
    reader.expect_reply(b"\r\n").await;
    assert_ne!(token, token2);
    reader
        .expect(
            format!("ms user:1 3 C{token}\r\nold\r\n").as_bytes(),
            b"EX\r\n",
        )
        .await;
    // Invalidation by md I also voids the token (it gives the item a new CAS).
    invalidator.expect(b"md user:1 I\r\n", b"HD\r\n").await;
    reader
        .expect(
            format!("ms user:1 3 C{token2}\r\nold\r\n").as_bytes(),
            b"EX\r\n",
        )
        .await;
    // The same with mcrouter's dialect.
    let t = reader.lease_get_miss("user:2").await;
    assert!(t > 1, "the first lease-get wins: {t}");
    invalidator
        .expect(b"delete user:2\r\n", b"DELETED\r\n")
        .await;
    reader
        .expect(
            format!("lease-set user:2 {t} 0 0 3\r\nold\r\n").as_bytes(),
            b"NOT_STORED\r\n",
        )
        .await;
    reader.expect(b"get user:2\r\n", b"END\r\n").await;
    // Without the token check (a plain set) the old value would now be cached: that is what the lease
    // prevents. A valid token stores.
    let t = reader.lease_get_miss("user:3").await;
    reader
        .expect(
            b"lease-get user:3\r\n",
            b"LVALUE user:3 1 0 0\r\n\r\nEND\r\n",
        )
        .await;
    reader
        .expect(
            format!("lease-set user:3 {t} 7 0 3\r\nnew\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    reader
        .expect(
            b"lease-get user:3\r\n",
            b"VALUE user:3 7 3\r\nnew\r\nEND\r\n",
        )
        .await;
    reader
        .expect(
            format!("lease-set user:3 {t} 7 0 3\r\nnew\r\n").as_bytes(),
            b"NOT_STORED\r\n",
        )
        .await;
    assert_eq!(reader.stat("lease_sets_refused").await, "5");
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_serving_with_x_w_z() -> R {
    let s = TestServer::start().await;
    let mut a = s.client().await;
    let mut b = s.client().await;
    a.expect(b"set feed 0 0 2\r\nv1\r\n", b"STORED\r\n").await;
    a.expect(b"md feed I T30\r\n", b"HD\r\n").await;
    // First reader: stale value, and it wins the refill.
    a.send(b"mg feed v c\r\n").await;
    let l = a.line().await;
    assert!(l.ends_with(" X W"), "{l}");
    let token = cas_of(&l);
    a.expect_reply(b"v1\r\n").await;
    // Others: stale value, told someone else refills.
    b.expect(b"mg feed v\r\n", b"VA 2 Z X\r\nv1\r\n").await;
    b.expect(b"mg feed v\r\n", b"VA 2 Z X\r\nv1\r\n").await;
    // A text client never sees the invalidated value.
    b.expect(b"get feed\r\n", b"END\r\n").await;
    // lease-get on a stale item with the refill taken: hot miss with the stale value.
    b.expect(b"lease-get feed\r\n", b"LVALUE feed 1 0 2\r\nv1\r\nEND\r\n")
        .await;
    // The winner refills with its token; everyone sees the fresh value without flags.
    a.expect(
        format!("ms feed 2 C{token}\r\nv2\r\n").as_bytes(),
        b"HD\r\n",
    )
    .await;
    b.expect(b"mg feed v\r\n", b"VA 2\r\nv2\r\n").await;
    b.expect(b"get feed\r\n", b"VALUE feed 0 2\r\nv2\r\nEND\r\n")
        .await;
    // lease-get on a stale item with no refill out: it wins with the item's new CAS as the token.
    a.expect(b"md feed I\r\n", b"HD\r\n").await;
    let t = a.lease_get_lvalue("feed", b"v2").await;
    assert!(t > 1, "{t}");
    a.expect(
        format!("lease-set feed {t} 0 0 2\r\nv3\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    a.expect(b"get feed\r\n", b"VALUE feed 0 2\r\nv3\r\nEND\r\n")
        .await;
    assert_eq!(a.stat("lease_invalidations").await, "2");
    // An invalidation whose T is already past ends the item, as in memcached: nothing stale stays.
    a.expect(b"md feed I T-1\r\n", b"HD\r\n").await;
    a.expect(b"mg feed v t\r\n", b"EN\r\n").await;
    a.expect(b"mg feed v t\r\n", b"EN\r\n").await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_window_ends_with_the_clock() -> R {
    let s = TestServer::start_with(|c| c.lease_window_secs = 10).await;
    let mut c = s.client().await;
    c.send(b"lease-get k\r\n").await;
    let first = c.line().await;
    c.expect_reply(b"\r\nEND\r\n").await;
    s.clock.advance(9);
    c.expect(b"lease-get k\r\n", b"LVALUE k 1 0 0\r\n\r\nEND\r\n")
        .await;
    s.clock.advance(1);
    // Window over: the placeholder expired, a new lease is handed out.
    c.send(b"lease-get k\r\n").await;
    let second = c.line().await;
    c.expect_reply(b"\r\nEND\r\n").await;
    assert_ne!(first, second);
    assert!(!second.contains(" 1 0 0"), "{second}");
    // mg N uses its own TTL as the window.
    c.expect(b"mg m N5\r\n", b"HD W\r\n").await;
    c.expect(b"mg m N5\r\n", b"HD Z\r\n").await;
    s.clock.advance(5);
    c.expect(b"mg m N5\r\n", b"HD W\r\n").await;
    s.stop().await;
    Ok(())
}

/// A `lease-get` that wins a stale item holds the refill for the lease window, not for as long as
/// the item lives: an `md I` with no T leaves an item that never expires, and a winner that never
/// sets used to leave every later `lease-get` a hot miss (token 1) for ever. After the window the
/// item is gone and the next `lease-get` wins; the first winner's token no longer stores. A stale
/// item whose CAS a client set to 1 gives its winner a fresh token, not the hot-miss one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_won_on_a_stale_item_ends_with_the_window() -> R {
    let s = TestServer::start_with(|c| c.lease_window_secs = 10).await;
    let mut c = s.client().await;
    c.expect(b"set feed 0 0 2\r\nv1\r\n", b"STORED\r\n").await;
    c.expect(b"md feed I\r\n", b"HD\r\n").await;
    let abandoned = c.lease_get_lvalue("feed", b"v1").await;
    assert!(abandoned > 1, "{abandoned}");
    s.clock.advance(9);
    c.expect(b"lease-get feed\r\n", b"LVALUE feed 1 0 2\r\nv1\r\nEND\r\n")
        .await;
    s.clock.advance(1);
    let token = c.lease_get_miss("feed").await;
    assert!(token > 1 && token != abandoned, "{token}");
    c.expect(
        format!("lease-set feed {abandoned} 0 0 2\r\nv2\r\n").as_bytes(),
        b"NOT_STORED\r\n",
    )
    .await;
    c.expect(
        format!("lease-set feed {token} 0 0 2\r\nv3\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"get feed\r\n", b"VALUE feed 0 2\r\nv3\r\nEND\r\n")
        .await;
    // A stale item whose own TTL ends first keeps it.
    c.expect(b"md feed I T3\r\n", b"HD\r\n").await;
    assert!(c.lease_get_lvalue("feed", b"v3").await > 1);
    c.expect(b"mg feed t\r\n", b"HD t3 Z X\r\n").await;
    // An invalidation can give the item CAS 1 (E1), the token that means "hot miss": the winner
    // gets a fresh token instead, and it stores.
    c.expect(b"md feed I E1\r\n", b"HD\r\n").await;
    let token = c.lease_get_lvalue("feed", b"v3").await;
    assert!(token > 1, "{token}");
    c.expect(b"lease-get feed\r\n", b"LVALUE feed 1 0 2\r\nv3\r\nEND\r\n")
        .await;
    c.expect(
        format!("lease-set feed {token} 0 0 2\r\nv4\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"get feed\r\n", b"VALUE feed 0 2\r\nv4\r\nEND\r\n")
        .await;
    s.stop().await;
    Ok(())
}

/// A reader's `T` cannot push back the end of a lease: not of an `mg N` placeholder (the common
/// `mg k v c N5 T600` gave every later reader's T600 to a 5 s lease, so under steady reads a
/// winner that died held the key for ever, and `T0` made the lease never end), not of a
/// `lease-get` placeholder, not of a stale item whose refill a `lease-get` won. A T that ends the
/// lease sooner still applies. Without the cap the first `mg lk N5 T600` below reports t600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readers_ttl_does_not_extend_a_lease() -> R {
    let s = TestServer::start_with(|c| c.lease_window_secs = 10).await;
    let mut c = s.client().await;
    c.send(b"mg lk c N5 T600\r\n").await;
    let first = c.line().await;
    assert!(
        first.starts_with("HD c") && first.ends_with(" W"),
        "{first}"
    );
    c.expect(b"mg lk N5 T600 t\r\n", b"HD t5 Z\r\n").await;
    c.expect(b"mg lk T0 t\r\n", b"HD t5 Z\r\n").await;
    s.clock.advance(5);
    c.send(b"mg lk c N5\r\n").await;
    let again = c.line().await;
    assert!(again.ends_with(" W"), "the lease ended after 5 s: {again}");
    // Sooner is allowed.
    c.expect(b"mg lk T2 t\r\n", b"HD t2 Z\r\n").await;
    // A lease-get placeholder lasts the window, whatever a reader's T says.
    let token = c.lease_get_miss("lg").await;
    assert!(token > 1);
    c.expect(b"mg lg T0 t\r\n", b"HD t10 Z\r\n").await;
    s.clock.advance(10);
    assert!(
        c.lease_get_miss("lg").await > token,
        "the lease ended with the window"
    );
    // A stale item whose refill a lease-get won: its end is the window's.
    c.expect(b"set feed 0 0 2\r\nv1\r\n", b"STORED\r\n").await;
    c.expect(b"md feed I\r\n", b"HD\r\n").await;
    assert!(c.lease_get_lvalue("feed", b"v1").await > 1);
    c.expect(b"mg feed T0 t\r\n", b"HD t10 Z X\r\n").await;
    c.expect(b"mg feed T600 t\r\n", b"HD t10 Z X\r\n").await;
    s.clock.advance(10);
    assert!(
        c.lease_get_miss("feed").await > 1,
        "the stale item went with the window"
    );
    // The reader that wins a stale item's refill does not re-time it with its own T either (found in
    // session 32: `mg k v c N5 T600` from the winner made `md k I T5` last 600 s, `T0` for ever, if the
    // winner then died).
    c.expect(b"set wins 0 0 2\r\nv1\r\n", b"STORED\r\n").await;
    c.expect(b"md wins I T5\r\n", b"HD\r\n").await;
    c.send(b"mg wins v t N5 T600\r\n").await;
    assert_eq!(c.line().await, "VA 2 t5 X W");
    assert_eq!(c.line().await, "v1");
    c.expect(b"mg wins T0 t\r\n", b"HD t5 Z X\r\n").await;
    s.clock.advance(5);
    c.send(b"mg wins c N5\r\n").await;
    let refill = c.line().await;
    assert!(
        refill.starts_with("HD c") && refill.ends_with(" W"),
        "the stale item went at its own end and the next reader has the lease: {refill}"
    );
    s.stop().await;
    Ok(())
}

/// A lease's winner may fill in replace mode (`ms ... MR C<token>`), as memcached 1.6 lets it: the
/// placeholder or stale item is replaced and readers get the value. Before session 32 that fill answered
/// NS and the key stayed won, every reader getting Z (and the stale value) until the item's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_carrying_the_lease_token_refills() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set r2 0 0 2\r\nv0\r\n", b"STORED\r\n").await;
    c.expect(b"md r2 I T30\r\n", b"HD\r\n").await;
    let mut token = 0;
    // A placeholder (r1), a stale item (r2).
    for (key, won_ends) in [("r1", " W"), ("r2", " X W")] {
        c.send(format!("mg {key} c N30\r\n").as_bytes()).await;
        let won = c.line().await;
        assert!(won.ends_with(won_ends), "{won}");
        token = cas_of(&won);
        let fill = format!("ms {key} 2 MR C{token}\r\nv1\r\n");
        c.expect(fill.as_bytes(), b"HD\r\n").await;
        let read = format!("mg {key} v t\r\n");
        c.expect(read.as_bytes(), b"VA 2 t-1\r\nv1\r\n").await;
    }
    // Without the token a replace still does not see a stale item (a known difference), and with a
    // voided one it is refused.
    c.expect(b"md r2 I\r\n", b"HD\r\n").await;
    c.expect(b"ms r2 2 MR\r\nv2\r\n", b"NS\r\n").await;
    c.expect(
        format!("ms r2 2 MR C{token}\r\nv2\r\n").as_bytes(),
        b"EX\r\n",
    )
    .await;
    s.stop().await;
    Ok(())
}

/// The CAS value in a meta reply line (`c<N>` flag).
fn cas_of(line: &str) -> u64 {
    line.split(' ')
        .find_map(|f| f.strip_prefix('c'))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no CAS in {line:?}"))
}

/// Writes that carry no token, or a token from before an invalidation, never store over what the
/// invalidation left (a stale item or a new lease) and never store where it removed the item, whatever
/// the command's mode (memcached 1.6.18 answers the same to each request here). Before: `add` and `ms ME`
/// stored over a placeholder and a stale item, `ms MA I C<older>` turned the live item stale with the
/// append stored, and `ms MA N C<voided>` vivified the key with the late value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_in_every_mode_are_refused_after_an_invalidation() -> R {
    let s = TestServer::start().await;
    let mut reader = s.client().await;
    let mut other = s.client().await;
    // A stale item: add (text and meta, with or without the old token) is not stored over it.
    reader
        .expect(b"set st 0 0 2\r\nv1\r\n", b"STORED\r\n")
        .await;
    reader.send(b"mg st c\r\n").await;
    let old = cas_of(&reader.line().await);
    other.expect(b"md st I\r\n", b"HD\r\n").await;
    for req in [
        format!("ms st 3 ME C{old}\r\nold\r\n"),
        "ms st 3 ME\r\nold\r\n".to_owned(),
    ] {
        reader.expect(req.as_bytes(), b"NS\r\n").await;
    }
    reader
        .expect(b"add st 0 0 3\r\nold\r\n", b"NOT_STORED\r\n")
        .await;
    other.expect(b"mg st v\r\n", b"VA 2 X W\r\nv1\r\n").await;
    // A lease placeholder: the same.
    other.expect(b"mg ph N30\r\n", b"HD W\r\n").await;
    reader
        .expect(b"add ph 0 0 3\r\nold\r\n", b"NOT_STORED\r\n")
        .await;
    reader.expect(b"ms ph 3 ME\r\nold\r\n", b"NS\r\n").await;
    other.expect(b"mg ph v\r\n", b"VA 0 Z\r\n\r\n").await;
    // An append or prepend with I and an older token: refused (EX), the live item left as it was.
    reader.expect(b"set j 0 0 2\r\nv1\r\n", b"STORED\r\n").await;
    reader.send(b"mg j c\r\n").await;
    let old = cas_of(&reader.line().await);
    other.expect(b"set j 0 0 2\r\nv2\r\n", b"STORED\r\n").await;
    for mode in ["MA", "MP"] {
        reader
            .expect(
                format!("ms j 1 {mode} I C{old}\r\nA\r\n").as_bytes(),
                b"EX\r\n",
            )
            .await;
    }
    other
        .expect(b"get j\r\n", b"VALUE j 0 2\r\nv2\r\nEND\r\n")
        .await;
    other.expect(b"mg j v\r\n", b"VA 2\r\nv2\r\n").await;
    // An autovivifying append with the token of a lease the delete voided: not stored, no item made.
    reader.send(b"mg e N30 c\r\n").await;
    let token = cas_of(&reader.line().await);
    other.expect(b"md e\r\n", b"HD\r\n").await;
    reader
        .expect(
            format!("ms e 3 MA N30 C{token}\r\nold\r\n").as_bytes(),
            b"NS\r\n",
        )
        .await;
    other.expect(b"mg e v\r\n", b"EN\r\n").await;
    // Without a token the append vivifies (N's documented meaning).
    reader.expect(b"ms e 1 MA N30\r\nx\r\n", b"HD\r\n").await;
    other.expect(b"mg e v\r\n", b"VA 1\r\nx\r\n").await;
    s.stop().await;
    Ok(())
}

/// An empty value is a value (a negative cache entry), also after a reader won its refill with `R`: text
/// clients still get it, touch finds it, add does not replace it. Before, an empty value with a win
/// handed out was taken for a lease placeholder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_value_won_with_r_is_not_a_lease_placeholder() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set none 0 100 0\r\n\r\n", b"STORED\r\n").await;
    c.expect(b"mg none R200 v\r\n", b"VA 0 W\r\n\r\n").await;
    c.expect(b"mg none v\r\n", b"VA 0 Z\r\n\r\n").await;
    c.expect(b"get none\r\n", b"VALUE none 0 0\r\n\r\nEND\r\n")
        .await;
    c.expect(b"lease-get none\r\n", b"VALUE none 0 0\r\n\r\nEND\r\n")
        .await;
    c.expect(b"add none 0 0 1\r\nB\r\n", b"NOT_STORED\r\n")
        .await;
    c.expect(b"touch none 500\r\n", b"TOUCHED\r\n").await;
    c.expect(b"ms none 1 MA\r\nA\r\n", b"HD\r\n").await;
    c.expect(b"get none\r\n", b"VALUE none 0 1\r\nA\r\nEND\r\n")
        .await;
    // A real placeholder is still absent for text commands.
    c.expect(b"mg ph N30\r\n", b"HD W\r\n").await;
    c.expect(b"get ph\r\n", b"END\r\n").await;
    c.expect(b"touch ph 10\r\n", b"NOT_FOUND\r\n").await;
    s.stop().await;
    Ok(())
}

/// A token handed out before a restart does not match the lease the restarted server hands out for the
/// same key (CAS values start at the wall clock in nanoseconds). Before, both servers counted from 1, so
/// the first lease after a restart had the same token as the first before it, and a late write-back
/// from before the restart stored under the new winner's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_before_a_restart_is_refused_after_it() -> R {
    let before = TestServer::start().await;
    let mut c = before.client().await;
    c.send(b"mg user:1 N30 c\r\n").await;
    let old = cas_of(&c.line().await);
    before.stop().await;
    let after = TestServer::start().await;
    let mut c = after.client().await;
    c.send(b"mg user:1 N30 c\r\n").await;
    let new = cas_of(&c.line().await);
    assert!(new > old, "tokens restarted: {old} then {new}");
    c.expect(
        format!("ms user:1 3 C{old}\r\nold\r\n").as_bytes(),
        b"EX\r\n",
    )
    .await;
    c.expect(
        format!("ms user:1 3 C{new}\r\nnew\r\n").as_bytes(),
        b"HD\r\n",
    )
    .await;
    // E0 would give an item CAS 0, which means "none": refused.
    c.expect(
        b"ms k 1 E0\r\nx\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    )
    .await;
    after.stop().await;
    Ok(())
}

/// Cache-aside with leases under real concurrency: 12 readers and 2 writers on 4 keys, over both
/// connection threads, for 2,000 invalidations, with both lease dialects on the same keys. The
/// "database" is a version counter per key. A writer commits (bumps the version), then invalidates with
/// `md`, `md I` or `delete`, and once that is answered raises the key's floor to the version it
/// committed. A reader notes the floor and asks with `mg v c N30` (even readers) or `lease-get` (odd
/// ones); when it wins the lease it reads the database, waits up to 2 ms (a slow query) and writes back
/// with `ms C<token>` or `lease-set`; on a plain hit the version read must be at least the noted floor.
/// That is the leases' promise: once an invalidation is answered, no reader is served a value from before
/// it (a value marked stale, `X` or an `LVALUE` with one, is allowed and counted), and at the end every
/// key holds its last version. Shown to fail, 3 runs each: with `ms`'s CAS comparison removed (any token
/// stores over what is there), 724-854 hits below the floor; with `lease-set` storing over any item
/// whatever its token, 735-854.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_aside_with_leases_serves_nothing_older_than_an_answered_invalidation() -> R {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    const KEYS: usize = 4;
    const READERS: u64 = 12;
    const WRITERS: u64 = 2;
    const INVALIDATIONS_PER_WRITER: u64 = 1_000;
    struct Shared {
        database: [AtomicU64; KEYS],
        floor: [AtomicU64; KEYS],
        writers_done: AtomicBool,
    }
    let shared = Arc::new(Shared {
        database: Default::default(),
        floor: Default::default(),
        writers_done: AtomicBool::new(false),
    });
    /// What one lease read got.
    enum Read {
        Hit {
            value: String,
            stale: bool,
        },
        Won {
            token: u64,
        },
        /// Another reader holds the lease and nothing stale is there to serve: wait and ask again.
        Wait,
        /// The server could not hold a lease (mcrouter's token 0): load, do not write back.
        NoLease,
    }
    async fn lease_read(c: &mut Client, meta: bool, key: &str) -> Read {
        if meta {
            c.send(format!("mg {key} v c N30\r\n").as_bytes()).await;
            let header = c.line().await;
            let value = c.line().await;
            let flags: Vec<&str> = header.split(' ').collect();
            assert_eq!(flags[0], "VA", "mg: {header}");
            if flags.contains(&"W") {
                Read::Won {
                    token: cas_of(&header),
                }
            } else if flags.contains(&"X") || !value.is_empty() {
                let stale = flags.contains(&"X");
                Read::Hit { value, stale }
            } else {
                Read::Wait
            }
        } else {
            c.send(format!("lease-get {key}\r\n").as_bytes()).await;
            let header = c.line().await;
            let value = c.line().await;
            assert_eq!(c.line().await, "END", "lease-get {key}: {header}");
            let fields: Vec<&str> = header.split(' ').collect();
            match (fields[0], fields.get(2).map(|t| t.parse::<u64>())) {
                ("VALUE", _) => Read::Hit {
                    value,
                    stale: false,
                },
                ("LVALUE", Some(Ok(0))) => Read::NoLease,
                ("LVALUE", Some(Ok(1))) if value.is_empty() => Read::Wait,
                ("LVALUE", Some(Ok(1))) => Read::Hit { value, stale: true },
                ("LVALUE", Some(Ok(token))) => Read::Won { token },
                _ => panic!("lease-get {key}: {header}"),
            }
        }
    }
    /// Writes back `value` under the lease `token`: true if stored.
    async fn write_back(c: &mut Client, meta: bool, key: &str, token: u64, value: &str) -> bool {
        let n = value.len();
        if meta {
            c.send(format!("ms {key} {n} C{token}\r\n{value}\r\n").as_bytes())
                .await;
        } else {
            c.send(format!("lease-set {key} {token} 0 0 {n}\r\n{value}\r\n").as_bytes())
                .await;
        }
        match c.line().await.as_str() {
            "HD" | "STORED" => true,
            "EX" | "NF" | "NOT_STORED" => false,
            other => panic!("write-back of {key}: {other}"),
        }
    }
    #[derive(Default, Debug)]
    struct Seen {
        fresh_hits: u64,
        stale_hits: u64,
        older_than_floor: Vec<String>,
        write_backs_stored: u64,
        write_backs_refused: u64,
        no_lease: u64,
    }
    let s = TestServer::start().await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (addr, shared) = (s.addr, shared.clone());
        writers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut next = xorshift(1_000 + w);
            for _ in 0..INVALIDATIONS_PER_WRITER {
                let k = (next() % KEYS as u64) as usize;
                let committed = shared.database[k].fetch_add(1, SeqCst) + 1;
                let request = match next() % 3 {
                    0 => format!("md ca:{k}\r\n"),
                    1 => format!("md ca:{k} I\r\n"),
                    _ => format!("delete ca:{k}\r\n"),
                };
                c.send(request.as_bytes()).await;
                let reply = c.line().await;
                assert!(
                    ["HD", "NF", "DELETED", "NOT_FOUND"].contains(&reply.as_str()),
                    "{request}: {reply}"
                );
                shared.floor[k].fetch_max(committed, SeqCst);
                if next() % 4 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }));
    }
    let mut readers = Vec::new();
    for r in 0..READERS {
        let (addr, shared) = (s.addr, shared.clone());
        readers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let meta = r % 2 == 0;
            let mut next = xorshift(r + 1);
            let mut seen = Seen::default();
            let mut last_round = false;
            while !last_round {
                last_round = shared.writers_done.load(SeqCst);
                let k = (next() % KEYS as u64) as usize;
                let key = format!("ca:{k}");
                let floor = shared.floor[k].load(SeqCst);
                match lease_read(&mut c, meta, &key).await {
                    Read::Won { token } => {
                        let version = shared.database[k].load(SeqCst);
                        if next() % 2 == 0 {
                            tokio::time::sleep(Duration::from_micros(next() % 2_000)).await;
                        }
                        if write_back(&mut c, meta, &key, token, &version.to_string()).await {
                            seen.write_backs_stored += 1;
                        } else {
                            seen.write_backs_refused += 1;
                        }
                    }
                    Read::Wait => tokio::time::sleep(Duration::from_micros(100)).await,
                    Read::NoLease => seen.no_lease += 1,
                    Read::Hit { stale: true, .. } => seen.stale_hits += 1,
                    Read::Hit {
                        value,
                        stale: false,
                    } => {
                        seen.fresh_hits += 1;
                        let version: u64 = value.parse()?;
                        if version < floor {
                            seen.older_than_floor
                                .push(format!("{key} served {version}, invalidated up to {floor}"));
                        }
                    }
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(seen)
        }));
    }
    for w in writers {
        w.await?;
    }
    shared.writers_done.store(true, SeqCst);
    let mut all = Seen::default();
    for r in readers {
        let seen = r.await?.map_err(|e| e.to_string())?;
        all.fresh_hits += seen.fresh_hits;
        all.stale_hits += seen.stale_hits;
        all.older_than_floor.extend(seen.older_than_floor);
        all.write_backs_stored += seen.write_backs_stored;
        all.write_backs_refused += seen.write_backs_refused;
        all.no_lease += seen.no_lease;
    }
    let older = std::mem::take(&mut all.older_than_floor);
    assert!(
        older.is_empty(),
        "{} hits older than an answered invalidation, first {:?}; {all:?}",
        older.len(),
        older.first()
    );
    // The races have to have happened for the test to mean anything.
    assert!(
        all.fresh_hits > 1_000 && all.write_backs_refused > 100 && all.write_backs_stored > 100,
        "{all:?}"
    );
    // Never stale for good: each key, read once more with a lease, holds its last version (or is
    // refilled with it by this read).
    let mut c = s.client().await;
    for k in 0..KEYS {
        let key = format!("ca:{k}");
        let last = shared.database[k].load(SeqCst).to_string();
        match lease_read(&mut c, true, &key).await {
            Read::Won { token } => assert!(write_back(&mut c, true, &key, token, &last).await),
            Read::Hit {
                value,
                stale: false,
            } => assert_eq!(value, last, "{key}"),
            _ => panic!("{key} is stale or leased with every reader gone"),
        }
    }
    eprintln!("{all:?}");
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// The maintainer thread: background expiry and its pacing.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_expiry_reclaims_items_nobody_reads() -> R {
    let fast = |c: &mut cache_node::server::ServerConfig| {
        c.maintainer_busy_sleep = Some(Duration::from_millis(1));
        c.maintainer_idle_sleep_max = Duration::from_millis(5);
        c.expire_slots_per_sec = 1_000_000;
    };
    let walking = TestServer::start_with(fast).await;
    // Control: the same server with the walk's rate at zero; only the walk can reclaim here.
    let still = TestServer::start_with(|c| {
        fast(c);
        c.expire_slots_per_sec = 0;
    })
    .await;
    for s in [&walking, &still] {
        let mut c = s.client().await;
        for i in 0..100 {
            c.expect(format!("set k{i} 0 5 1\r\nv\r\n").as_bytes(), b"STORED\r\n")
                .await;
        }
        c.expect(b"set keep 0 0 1\r\nv\r\n", b"STORED\r\n").await;
        assert_eq!(s.node.store.stats().curr_items, 101);
        s.clock.advance(6);
    }
    // No client touches the expired keys from here on.
    let st = poll_for_async(Duration::from_secs(10), async || {
        let st = walking.node.store.stats();
        match st.curr_items {
            1 => Ok(st),
            n => Err(format!(
                "{n} items: the live item stays, the 100 expired ones go"
            )),
        }
    })
    .await;
    assert_eq!(st.crawler_reclaimed, 100);
    assert_eq!(still.node.store.stats().curr_items, 101);
    assert_eq!(still.node.store.stats().crawler_reclaimed, 0);
    let mut c = walking.client().await;
    c.expect(b"get keep k0\r\n", b"VALUE keep 0 1\r\nv\r\nEND\r\n")
        .await;
    walking.stop().await;
    still.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainer_backs_off_when_idle_and_wakes_often_under_load() -> R {
    let s = TestServer::start_with(|c| {
        c.maintainer_busy_sleep = Some(Duration::from_millis(1));
        c.maintainer_idle_sleep_max = Duration::from_millis(50);
    })
    .await;
    let wakeups = || {
        s.node
            .maintainer_wakeups
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Idle for 600 ms: the sleep doubles from 1 ms to 50 ms, about 17 wake-ups (600 without back-off).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let idle = wakeups();
    assert!((1..50).contains(&idle), "{idle} wake-ups in 600 ms idle");
    // 500 ms of requests: back to 1 ms sleeps, up to 500 wake-ups (about 10 if it stayed backed off).
    let mut c = s.client().await;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        c.expect(b"mn\r\n", b"MN\r\n").await;
    }
    let busy = wakeups() - idle;
    assert!(busy >= 50, "{busy} wake-ups in 500 ms under load");
    // The same counter is in `stats`.
    let reported: u64 = c.stat("maintainer_wakeups").await.parse()?;
    assert!(reported >= idle + busy, "stats says {reported}");
    eprintln!("maintainer wake-ups: {idle} in 600 ms idle, {busy} in 500 ms busy");
    // The tick it places its busy wake-ups between: the coarse clock's resolution, once observed (at
    // start, or at a retry 1, 3, 7, 15, 31 s after it when the tests kept the thread from seeing two
    // ticks; the deadline covers five retries).
    let tick_us = cache_node::clock::coarse_resolution()
        .expect("a coarse clock")
        .as_micros() as u64;
    let reported_tick = poll_for_async(Duration::from_secs(40), async || {
        match c.stat("maintainer_tick_us").await.parse::<u64>() {
            Ok(0) => Err("maintainer_tick_us still 0".to_string()),
            Ok(tick) => Ok(tick),
            Err(e) => panic!("maintainer_tick_us: {e}"),
        }
    })
    .await;
    assert_eq!(reported_tick, tick_us, "the tick the maintainer knows");
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Limits and bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_limits() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let k250 = "k".repeat(250);
    let k251 = "k".repeat(251);
    c.expect(
        format!("set {k250} 0 0 1\r\nx\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(
        format!("get {k250}\r\n").as_bytes(),
        format!("VALUE {k250} 0 1\r\nx\r\nEND\r\n").as_bytes(),
    )
    .await;
    // A bad key in a set: error, and the data block is swallowed (without swallowing, "x" would come back
    // as a second ERROR line and the connection would be out of sync).
    c.expect(
        format!("set {k251} 0 0 1\r\nx\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        format!("get {k251}\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"get a\x01b\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set a\x7fb 0 0 1\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(b"get a\tb\r\n", b"CLIENT_ERROR bad command line format\r\n")
        .await;
    c.expect(
        format!("mg {k251} v\r\n").as_bytes(),
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set k 0 0 abc\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set k abc 0 1\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set k 4294967296 0 1\r\nx\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    c.expect(
        b"set k 0 0 1\r\nxyz\r\n",
        b"CLIENT_ERROR bad data chunk\r\n",
    )
    .await;
    // The bad chunk consumed "x" plus two bytes ("yz"); the "\r\n" left over is an empty command: ERROR.
    c.expect(b"mn\r\n", b"ERROR\r\nMN\r\n").await;
    // Nothing stored was lost.
    c.expect(
        format!("get {k250}\r\n").as_bytes(),
        format!("VALUE {k250} 0 1\r\nx\r\nEND\r\n").as_bytes(),
    )
    .await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_value_is_swallowed_even_in_pieces() -> R {
    let s = TestServer::start_with(|c| c.limits.max_value_len = 1024).await;
    let mut c = s.client().await;
    c.expect(b"set keep 0 0 4\r\nsafe\r\n", b"STORED\r\n").await;
    c.send(b"set big 0 0 5000\r\n").await;
    c.expect_reply(b"SERVER_ERROR object too large for cache\r\n")
        .await;
    // The data block arrives later, in pieces, and contains text that looks like commands. Without the
    // swallow each "delete keep" inside would run and the reply stream would hold DELETED/ERROR lines.
    let mut data = Vec::new();
    while data.len() < 5000 {
        data.extend_from_slice(b"delete keep\r\n");
    }
    data.truncate(5000);
    for chunk in data.chunks(333) {
        c.send(chunk).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    c.send(b"\r\n").await;
    c.expect(b"get keep\r\n", b"VALUE keep 0 4\r\nsafe\r\nEND\r\n")
        .await;
    // Same for ms and lease-set.
    c.send(b"ms big 2000\r\n").await;
    c.send(&vec![b'x'; 2000]).await;
    c.expect(
        b"\r\nmn\r\n",
        b"SERVER_ERROR object too large for cache\r\nMN\r\n",
    )
    .await;
    c.expect(
        b"lease-set big 5 0 0 1025\r\n",
        b"SERVER_ERROR object too large for cache\r\n",
    )
    .await;
    c.send(&vec![b'y'; 1025]).await;
    c.expect(b"\r\nget keep\r\n", b"VALUE keep 0 4\r\nsafe\r\nEND\r\n")
        .await;
    // Append past the limit: NOT_STORED, as memcached (the result cannot be allocated), the value kept.
    c.expect(b"set a 0 0 1000\r\n", b"").await;
    c.send(&vec![b'a'; 1000]).await;
    c.expect(b"\r\n", b"STORED\r\n").await;
    c.send(b"append a 0 0 100\r\n").await;
    c.send(&[b'b'; 100]).await;
    c.expect(b"\r\nmg a s\r\n", b"NOT_STORED\r\nHD s1000\r\n")
        .await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn largest_item_fits_with_default_budget() -> R {
    // -m 64 -I 1m, memcached's defaults: a 1 MiB value must store. (The store caps an item at a quarter of
    // a shard's share of the budget; split over 64 or even 16 shards, the item would be refused with
    // SERVER_ERROR object too large: effective_shards prevents that.)
    let s = TestServer::start_with(|c| c.store_shards = 64).await;
    let mut c = s.client().await;
    let value = vec![b'z'; 1 << 20];
    c.send(b"set big 0 0 1048576\r\n").await;
    c.send(&value).await;
    c.expect(b"\r\n", b"STORED\r\n").await;
    c.send(b"get big\r\n").await;
    c.expect_reply(b"VALUE big 0 1048576\r\n").await;
    assert_eq!(c.read_n(1 << 20).await, value);
    c.expect_reply(b"\r\nEND\r\n").await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_line_is_cut_off_and_connection_survives() -> R {
    let s = TestServer::start_with(|c| c.limits.max_line_len = 4096).await;
    let mut c = s.client().await;
    c.expect(b"set keep 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    // 1 MiB without a newline: answered once, buffered never (memory stays at the line bound).
    let junk = vec![b'g'; 64 * 1024];
    for _ in 0..16 {
        c.send(&junk).await;
    }
    c.expect_reply(b"CLIENT_ERROR line too long\r\n").await;
    c.expect(
        b"tail of that line\r\nget keep\r\n",
        b"VALUE keep 0 1\r\nx\r\nEND\r\n",
    )
    .await;
    // A multi-get line within the bound is fine.
    let keys: String = (0..100).map(|i| format!(" key{i:04}")).collect();
    c.expect(format!("get{keys}\r\n").as_bytes(), b"END\r\n")
        .await;
    s.stop().await;
    Ok(())
}

/// A `get`, `gets`, `gat` or `gats` line over the line bound is answered as memcached answers it
/// (memcached reads get lines of any length), whether it arrives in one write or in many, with the
/// request after it answered too. Before session 27 such a line got `CLIENT_ERROR line too long`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_lines_of_any_length_are_answered() -> R {
    let s = TestServer::start_with(|c| c.limits.max_line_len = 4096).await;
    let mut c = s.client().await;
    // 3,000 keys (a 27 KB line, over six times the bound), one in 60 stored.
    let keys: Vec<String> = (0..3_000).map(|i| format!("key{i:05}")).collect();
    for key in keys.iter().step_by(60) {
        c.expect(
            format!("set {key} 7 0 {}\r\nv-{key}\r\n", key.len() + 2).as_bytes(),
            b"STORED\r\n",
        )
        .await;
    }
    let line = keys.join(" ");
    let version = format!("VERSION {}\r\n", cache_node::commands::VERSION);
    for (verb, write) in [
        ("get", 27_000),
        ("gets", 1_000),
        ("gat 0", 97),
        ("gats 100", 4_099),
    ] {
        let mut batch = format!("{verb} {line}\r\nversion\r\n").into_bytes();
        // Every key once more on a second line of the same batch, at a different offset.
        batch.extend_from_slice(format!("{verb}  {line}\r\n").as_bytes());
        for piece in batch.chunks(write) {
            c.send(piece).await;
        }
        for repeat in 0..2 {
            for key in keys.iter().step_by(60) {
                let value_line = c.line().await;
                let fields: Vec<&str> = value_line.split(' ').collect();
                assert_eq!(
                    fields[..4],
                    ["VALUE", key.as_str(), "7", &(key.len() + 2).to_string()],
                    "{verb}"
                );
                // gets and gats send the CAS value, get and gat do not.
                let with_cas = verb == "gets" || verb.starts_with("gats");
                assert_eq!(
                    fields.len(),
                    if with_cas { 5 } else { 4 },
                    "{verb}: {value_line}"
                );
                assert_eq!(c.line().await, format!("v-{key}"));
            }
            c.expect_reply(b"END\r\n").await;
            if repeat == 0 {
                c.expect_reply(version.as_bytes()).await;
            }
        }
    }
    // Every key counted: 2 x 3,000 gets and 2 x 3,000 touches per verb pair, 100 hits each way.
    assert_eq!(
        (c.stat("cmd_get").await, c.stat("get_hits").await),
        ("12000".into(), "200".into())
    );
    assert_eq!(
        (c.stat("cmd_touch").await, c.stat("touch_hits").await),
        ("12000".into(), "200".into())
    );
    s.stop().await;
    Ok(())
}

/// A long get line is answered as it arrives, never buffered whole: the values of its first keys
/// come back before the rest of the line is sent. A bad key in it refuses the rest of the line with
/// memcached's CLIENT_ERROR, after the values already sent (memcached, which reads the line whole,
/// sends the CLIENT_ERROR alone; SERVER.md, "Known differences"), and the connection stays in sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_get_line_is_answered_as_it_arrives() -> R {
    let s = TestServer::start_with(|c| c.limits.max_line_len = 4096).await;
    let mut c = s.client().await;
    c.expect(b"set hit 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    let value = b"VALUE hit 0 1\r\nx\r\n";
    // 256 KiB of keys, no newline: answered part by part.
    let keys = " hit miss-0000 miss-0001 miss-0002".repeat(256 * 1024 / 34);
    c.send(format!("get{keys}").as_bytes()).await;
    for _ in 0..5_000 {
        assert_eq!(c.read_n(value.len()).await, value);
    }
    let bad_key = "b".repeat(251);
    c.send(format!(" hit {bad_key} hit\r\nget hit\r\n").as_bytes())
        .await;
    let mut before_error = 5_000;
    loop {
        let line = c.line().await;
        if line == "VALUE hit 0 1" {
            assert_eq!(c.line().await, "x");
            before_error += 1;
        } else {
            assert_eq!(line, "CLIENT_ERROR bad command line format");
            break;
        }
    }
    // At most every hit before the bad key, and no END: the line was refused from the bad key's part on.
    assert!(before_error <= 256 * 1024 / 34 + 1, "{before_error}");
    c.expect_reply(b"VALUE hit 0 1\r\nx\r\nEND\r\n").await;
    s.stop().await;
    Ok(())
}

/// A line over the bound whose end arrives in the same read as the requests after it: only that
/// line is refused. Before, the whole read was dropped and the next line swallowed as well, so a
/// `set` whose value was `flush_all` ran its value as a command and emptied the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_line_takes_only_itself_with_it() -> R {
    let s = TestServer::start_with(|c| c.limits.max_line_len = 4096).await;
    let mut c = s.client().await;
    c.expect(b"set victim 0 0 1\r\nv\r\n", b"STORED\r\n").await;
    // Not a get line: a get line of any length is answered (`get_lines_of_any_length_are_answered`).
    let keys: String = (0..1_000).map(|i| format!(" key{i:05}")).collect();
    let mut batch = format!("touch{keys}\r\nversion\r\n").into_bytes();
    batch.extend_from_slice(b"set k 0 0 9\r\nflush_all\r\nget victim\r\n");
    c.expect(
        &batch,
        format!(
            "CLIENT_ERROR line too long\r\nVERSION {}\r\nSTORED\r\nVALUE victim 0 1\r\nv\r\nEND\r\n",
            cache_node::commands::VERSION
        )
        .as_bytes(),
    )
    .await;
    c.expect(b"get k\r\n", b"VALUE k 0 9\r\nflush_all\r\nEND\r\n")
        .await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_politely() -> R {
    let s = TestServer::start_with(|c| c.max_connections = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut c = s.client().await;
        c.expect(b"mn\r\n", b"MN\r\n").await;
        open.push(c);
    }
    let total_before: u64 = open[0].stat("total_connections").await.parse()?;
    let mut extra = s.client().await;
    extra
        .expect_reply(b"ERROR Too many open connections\r\n")
        .await;
    assert!(extra.closed().await);
    // As memcached: a refused connection counts in rejected_connections, not in
    // total_connections (before session 31 it counted in both).
    assert_eq!(open[0].stat("rejected_connections").await, "1");
    assert_eq!(
        open[0].stat("total_connections").await.parse::<u64>()?,
        total_before
    );
    drop(open.pop());
    // The slot frees up once the server sees the close (its thread may wait for a core first).
    poll_for_async(Duration::from_secs(10), async || {
        let mut c = s.client().await;
        c.send(b"mn\r\n").await;
        match c.line().await.as_str() {
            "MN" => Ok(()),
            other => Err(format!("a new connection still gets {other:?}")),
        }
    })
    .await;
    assert!(open[0].stat("rejected_connections").await.parse::<u64>()? >= 1);
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// TTL with an injected clock.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_semantics_with_manual_clock() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set rel 0 10 1\r\nr\r\n", b"STORED\r\n").await;
    let abs = START_UNIX + 20;
    c.expect(
        format!("set abs 0 {abs} 1\r\na\r\n").as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"set neg 0 -1 1\r\nn\r\n", b"STORED\r\n").await;
    c.expect(
        format!("set past 0 {} 1\r\np\r\n", START_UNIX - 5).as_bytes(),
        b"STORED\r\n",
    )
    .await;
    c.expect(b"set forever 0 0 1\r\nf\r\n", b"STORED\r\n").await;
    c.expect(b"get neg past\r\n", b"END\r\n").await;
    c.expect(b"mg rel t\r\n", b"HD t10\r\n").await;
    s.clock.advance(9);
    c.expect(
        b"get rel abs\r\n",
        b"VALUE rel 0 1\r\nr\r\nVALUE abs 0 1\r\na\r\nEND\r\n",
    )
    .await;
    s.clock.advance(1);
    c.expect(b"get rel abs\r\n", b"VALUE abs 0 1\r\na\r\nEND\r\n")
        .await;
    s.clock.advance(10);
    c.expect(
        b"get rel abs forever\r\n",
        b"VALUE forever 0 1\r\nf\r\nEND\r\n",
    )
    .await;
    // touch and gat move the expiry.
    c.expect(b"set t 0 5 1\r\nt\r\n", b"STORED\r\n").await;
    c.expect(b"touch t 100\r\n", b"TOUCHED\r\n").await;
    s.clock.advance(50);
    c.expect(b"gat 10 t\r\n", b"VALUE t 0 1\r\nt\r\nEND\r\n")
        .await;
    s.clock.advance(10);
    c.expect(b"gats 10 t\r\n", b"END\r\n").await;
    c.expect(b"set t 0 0 1\r\nt\r\n", b"STORED\r\n").await;
    c.expect(b"touch t -1\r\n", b"TOUCHED\r\n").await;
    c.expect(b"get t\r\n", b"END\r\n").await;
    // flush_all with a delay: items live until then.
    c.expect(b"set f 0 0 1\r\nf\r\n", b"STORED\r\n").await;
    c.expect(b"flush_all 5\r\n", b"OK\r\n").await;
    c.expect(b"get f\r\n", b"VALUE f 0 1\r\nf\r\nEND\r\n").await;
    s.clock.advance(5);
    c.expect(b"get f forever\r\n", b"END\r\n").await;
    // Meta TTL.
    c.expect(b"ms m 1 T3\r\nm\r\n", b"HD\r\n").await;
    s.clock.advance(2);
    c.expect(b"mg m t v\r\n", b"VA 1 t1\r\nm\r\n").await;
    // R: recache win when the remaining TTL is low, once.
    c.expect(b"mg m R5 v\r\n", b"VA 1 W\r\nm\r\n").await;
    c.expect(b"mg m R5 v\r\n", b"VA 1 Z\r\nm\r\n").await;
    s.clock.advance(1);
    c.expect(b"mg m v\r\n", b"EN\r\n").await;
    assert!(c.stat("get_expired").await.parse::<u64>()? >= 1);
    s.stop().await;
    Ok(())
}

/// Meta `T` reads its TTL as the text commands read exptime (memcached 1.6.18 too, checked by hand:
/// `ms k 1 T<now+1000>` then `mg k t` answers `t1001` on its lagging clock, `T2592001` stores an item
/// that is gone at once): up to 30 days (2,592,000 s) it is relative, above it a Unix time. So `T` with
/// this clock's Unix time plus 100 lives 100 s, and `T2592001` is a second of 1970, long past. Were `T`
/// taken as relative whatever its size, the first would live 54 years and the last 30 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_ttl_above_30_days_is_a_unix_time() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(
        format!("ms abs 1 T{}\r\na\r\n", START_UNIX + 100).as_bytes(),
        b"HD\r\n",
    )
    .await;
    c.expect(b"mg abs t v\r\n", b"VA 1 t100\r\na\r\n").await;
    c.expect(b"ms month 1 T2592000\r\nm\r\n", b"HD\r\n").await;
    c.expect(b"mg month t\r\n", b"HD t2592000\r\n").await;
    c.expect(b"ms past 1 T2592001\r\np\r\n", b"HD\r\n").await;
    c.expect(b"mg past v\r\n", b"EN\r\n").await;
    // mg's T (a touch) converts the same way.
    c.expect(
        format!("mg month T{} t\r\n", START_UNIX + 50).as_bytes(),
        b"HD t50\r\n",
    )
    .await;
    s.clock.advance(49);
    c.expect(b"mg abs t\r\nmg month t\r\n", b"HD t51\r\nHD t1\r\n")
        .await;
    s.clock.advance(1);
    c.expect(b"mg abs t\r\nmg month t\r\n", b"HD t50\r\nEN\r\n")
        .await;
    s.clock.advance(50);
    c.expect(b"mg abs v\r\n", b"EN\r\n").await;
    s.stop().await;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Memory budget, stats, metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_flood_stays_within_memory_budget() -> R {
    let s = TestServer::start_with(|c| {
        c.memory_limit_bytes = 2 << 20;
        c.store_shards = 4;
    })
    .await;
    let mut c = s.client().await;
    c.send(&noreply_sets("flood:", 8000, &[b'v'; 1000])).await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    let bytes: u64 = c.stat("bytes").await.parse()?;
    let limit: u64 = c.stat("limit_maxbytes").await.parse()?;
    let evictions: u64 = c.stat("evictions").await.parse()?;
    let items: u64 = c.stat("curr_items").await.parse()?;
    assert_eq!(limit, 2 << 20);
    assert!(bytes <= limit, "bytes {bytes} over limit {limit}");
    assert!(
        evictions > 0 && items < 8000,
        "evictions {evictions} items {items}"
    );
    s.stop().await;
    Ok(())
}

/// Large values stored once and never read make room among themselves, not by emptying the pages
/// of small values that are read: 12,500 values of 100 B, each read twice, then 50 sets of 400 KB
/// (20 MB) into 16 MiB. memcached, which evicts within the large values' class, keeps every small
/// value; so does cache-node now. Before session 34 the page to empty was chosen among the main
/// space's next victims only, while the large values sat in the window (sized in items): 16 MiB
/// kept 3,165 of the 12,500 here (and 64 MiB 17,697 of 50,000 with 200 such sets). Since session 35
/// most of the large values are refused a place in the window (`size_refusals`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_stored_once_do_not_push_out_small_values_in_use() -> R {
    let s = TestServer::start_with(|c| {
        c.memory_limit_bytes = 16 << 20;
        c.store_shards = 2;
    })
    .await;
    let mut c = s.client().await;
    let small = 12_500;
    c.send(&noreply_sets("s", small, &[b'v'; 100])).await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    let hits = async |c: &mut Client| -> usize {
        let mut hits = 0;
        for batch in (0..small).collect::<Vec<_>>().chunks(100) {
            let keys: Vec<String> = batch.iter().map(|i| format!("s{i}")).collect();
            c.send(format!("mg {} v\r\n", keys.join(" v\r\nmg ")).as_bytes())
                .await;
            for _ in batch {
                let line = c.line().await;
                if line.starts_with("VA ") {
                    hits += 1;
                    c.line().await;
                } else {
                    assert_eq!(line, "EN");
                }
            }
        }
        hits
    };
    assert_eq!(hits(&mut c).await, small);
    assert_eq!(hits(&mut c).await, small);
    for i in 0..50 {
        c.expect(
            &common::set_request(&format!("big{i}"), 400_000),
            b"STORED\r\n",
        )
        .await;
    }
    // Size-aware admission (session 35) changes what stays, not what a client sees of a set: the
    // last large value, refused a place in the window, is still there.
    c.send(b"mg big49 s\r\n").await;
    assert_eq!(c.line().await, "HD s400000");
    let refusals: u64 = c.stat("size_refusals").await.parse()?;
    assert!(refusals > 0, "no large value was refused a place");
    let kept = hits(&mut c).await;
    assert!(
        kept >= small * 99 / 100,
        "{kept} of {small} small values kept"
    );
    s.stop().await;
    Ok(())
}

/// A `set` or an `ms` refused for want of memory removes the item it would have replaced, as
/// memcached 1.6 does ("avoid stale data persisting in cache because we failed alloc"); `add` leaves
/// it. Nine clients hold most of an 8 MiB node for values still arriving; a 1 MB value for a key that
/// has an item is then refused. Before, the old value stayed readable after the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_refused_for_want_of_memory_removes_the_old_item() -> R {
    let s = TestServer::start_with(|c| c.memory_limit_bytes = 8 << 20).await;
    let mut c = s.client().await;
    for key in ["k", "m", "a"] {
        c.expect(
            format!("set {key} 0 0 3\r\nold\r\n").as_bytes(),
            b"STORED\r\n",
        )
        .await;
    }
    let half = vec![b'h'; 900_000];
    let mut holders = Vec::new();
    for i in 0..9 {
        let mut h = s.client().await;
        h.send(format!("set h{i} 0 0 1000000\r\n").as_bytes()).await;
        h.send(&half).await;
        holders.push(h);
    }
    // Go on once the holders' data is all in: over 6 MiB held and unchanged for 200 ms (7.9 MB here).
    // Going on at the first reading over 6 MiB could leave room for the 1 MB value under load, and the
    // set was then stored, not refused.
    let mut since: Option<(u64, std::time::Instant)> = None;
    poll_for_async(Duration::from_secs(20), async || {
        let held: u64 = c.stat("reserved_bytes").await.parse().unwrap();
        let steady_since = match since {
            Some((before, at)) if before == held => at,
            _ => std::time::Instant::now(),
        };
        since = Some((held, steady_since));
        (held > 6 << 20 && steady_since.elapsed() >= Duration::from_millis(200))
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "{held} bytes held, unchanged for {:?}",
                    steady_since.elapsed()
                )
            })
    })
    .await;
    let value = vec![b'n'; 1_000_000];
    for (line, key, refused) in [
        (
            "set k 0 0 1000000\r\n",
            "k",
            &b"SERVER_ERROR out of memory storing object\r\n"[..],
        ),
        (
            "ms m 1000000\r\n",
            "m",
            b"SERVER_ERROR out of memory storing object\r\n",
        ),
        (
            "add a 0 0 1000000\r\n",
            "a",
            b"SERVER_ERROR out of memory storing object\r\n",
        ),
    ] {
        c.send(line.as_bytes()).await;
        c.expect_reply(refused).await;
        c.send(&value).await;
        c.send(b"\r\n").await;
        let kept = if key == "a" {
            "VALUE a 0 3\r\nold\r\nEND\r\n"
        } else {
            "END\r\n"
        };
        c.expect(format!("get {key}\r\n").as_bytes(), kept.as_bytes())
            .await;
    }
    drop(holders);
    s.stop().await;
    Ok(())
}

/// Room held for values in flight is given back however the request ends: stored, refused for want of
/// room, or cut off by the client hanging up mid-value. 24 clients send 15 values of 20-200 KB each in
/// pieces, concurrently, into a 1.5 MiB node, and every fifth one hangs up halfway (not the last, so the
/// last thing each client does stores or is refused, and a refused hold evicts nothing). Every set is
/// answered `STORED` or `SERVER_ERROR out of memory storing object` (both happen: 12-16 kept and 19-51
/// refused in 13 runs, 10 of them beside three spinning processes; with a 2 MiB node one loaded run of
/// five refused none); a stored value reads back whole unless evicted; the accounted bytes never pass the
/// budget; and once the clients are gone no room is held. Without the release on a dropped connection
/// (its hold forgotten instead), the room of the cut-off values stays held, soon nearly every set is
/// refused (1-3 kept, 138-203 refused in three runs, 1.3-1.5 MB still held at the end), and this test
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_for_values_in_flight_is_given_back_however_the_request_ends() -> R {
    let s = TestServer::start_with(|c| {
        c.memory_limit_bytes = 3 << 19;
        c.store_shards = 2;
    })
    .await;
    let limit = s.node.store.stats().limit_maxbytes;
    let clients: Vec<_> = (0..24u64)
        .map(|client| {
            let addr = s.addr;
            tokio::spawn(async move {
                let mut next = xorshift(client + 1);
                let (mut stored, mut refused) = (Vec::new(), 0);
                let mut c = common::Client::connect(addr).await;
                for i in 0..15 {
                    let len = 20_000 + (next() % 180_000) as usize;
                    let fill = b'a' + (next() % 26) as u8;
                    let key = format!("c{client}-{i}");
                    c.send(format!("set {key} 0 0 {len}\r\n").as_bytes()).await;
                    let value = vec![fill; len];
                    for piece in value.chunks(len / 3 + 1) {
                        c.send(piece).await;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        if i % 5 == 2 {
                            // Hang up halfway through the value; carry on with a new connection.
                            c = common::Client::connect(addr).await;
                            break;
                        }
                    }
                    if i % 5 == 2 {
                        continue;
                    }
                    c.send(b"\r\n").await;
                    match c.line().await.as_str() {
                        "STORED" => stored.push((key, fill, len)),
                        "SERVER_ERROR out of memory storing object" => refused += 1,
                        other => panic!("set {key}: {other}"),
                    }
                }
                (c, stored, refused)
            })
        })
        .collect();
    let mut watcher = s.client().await;
    let mut results = Vec::new();
    for task in clients {
        results.push(task.await?);
        let bytes: u64 = watcher.stat("bytes").await.parse()?;
        assert!(bytes <= limit, "bytes {bytes} over the limit {limit}");
    }
    let refused: usize = results.iter().map(|r| r.2).sum();
    let mut stored = 0;
    for (c, values, _) in &mut results {
        for (key, fill, len) in values.iter() {
            c.send(format!("get {key}\r\n").as_bytes()).await;
            let line = c.line().await;
            if line == "END" {
                continue; // evicted by later values
            }
            assert_eq!(line, format!("VALUE {key} 0 {len}"));
            let data = c.read_n(len + 2).await;
            assert!(
                data[..*len].iter().all(|b| b == fill),
                "{key} came back changed"
            );
            assert_eq!(c.line().await, "END");
            stored += 1;
        }
    }
    eprintln!("room for values in flight: {stored} kept, {refused} refused");
    assert!(
        stored > 0 && refused > 0,
        "{stored} kept, {refused} refused"
    );
    // The hung-up connections end on the server shortly after the clients close them.
    poll_for_async(Duration::from_secs(10), async || {
        match s.node.store.stats().reserved_bytes {
            0 => Ok(()),
            held => Err(format!(
                "{held} bytes still held for values nobody is sending"
            )),
        }
    })
    .await;
    s.stop().await;
    Ok(())
}

/// `stats cachedump CLASS LIMIT` lists a size class's items as memcached 1.6 does (`ITEM key [N b; T s]`,
/// T the Unix expiry or 0), so key-listing tools such as libmemcached's `memcdump` work; lease
/// placeholders are left out, as text commands do not see them. Before session 32 it answered `ERROR`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_cachedump_lists_a_classes_items() -> R {
    use cache_node::clock::Clock;
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set a 0 0 3\r\nabc\r\n", b"STORED\r\n").await;
    c.expect(b"set b 0 100 3\r\nxyz\r\n", b"STORED\r\n").await;
    c.expect(b"mg lease N30\r\n", b"HD W\r\n").await;
    c.expect(&common::set_request("big", 5000), b"STORED\r\n")
        .await;
    let dump = async |c: &mut common::Client, request: &[u8]| -> Vec<String> {
        c.send(request).await;
        let mut lines = Vec::new();
        loop {
            let line = c.line().await;
            if line == "END" {
                return lines;
            }
            lines.push(line);
        }
    };
    let b_expires = s.clock.unix_now() + 100;
    let mut all = Vec::new();
    let mut fullest = (0, 0);
    for class in common::item_class_ids(&c.stats("items").await) {
        let lines = dump(&mut c, format!("stats cachedump {class} 0\r\n").as_bytes()).await;
        fullest = fullest.max((lines.len(), class));
        all.extend(lines);
    }
    all.sort();
    assert_eq!(
        all,
        [
            "ITEM a [3 b; 0 s]".to_string(),
            format!("ITEM b [3 b; {b_expires} s]"),
            "ITEM big [5000 b; 0 s]".to_string(),
        ]
    );
    // A limit, a class with no items, and memcached's refusals.
    let (listed, class) = fullest;
    assert_eq!(listed, 2, "a and b share a class");
    let limited = dump(&mut c, format!("stats cachedump {class} 1\r\n").as_bytes()).await;
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert!(dump(&mut c, b"stats cachedump 63 0\r\n").await.is_empty());
    c.expect(
        b"stats cachedump 64 0\r\n",
        b"CLIENT_ERROR Illegal slab id\r\n",
    )
    .await;
    c.expect(
        b"stats cachedump 1\r\n",
        b"CLIENT_ERROR bad command line\r\n",
    )
    .await;
    c.expect(
        b"stats cachedump x 0\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    )
    .await;
    s.stop().await;
    Ok(())
}

/// Reads up to and including the `END\r\n` that closes a metadump (its item lines end in a bare
/// `\n`, as memcached's), returning what came before `END`.
async fn read_metadump(c: &mut Client) -> String {
    let mut text = Vec::new();
    while !text.ends_with(b"END\r\n") {
        text.extend(c.read_some().await);
    }
    text.truncate(text.len() - 5);
    String::from_utf8(text).expect("metadump lines are ASCII")
}

/// `lru_crawler metadump all|hash|IDS` lists every item as memcached 1.6.18 does (`key=K exp=E la=L
/// cas=C fetch=yes|no cls=ID size=N`, K URL-encoded, E -1 or the Unix expiry, L the Unix time of
/// the last access), lease placeholders and expired items left out; a bad class id is `BADCLASS
/// invalid class id` and other forms `ERROR`, as memcached answers them. `memcached-tool HOST
/// dump|keys` read it; before session 34 it was `ERROR`, and memcached-tool waited forever for END.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_crawler_metadump_lists_items_as_memcached() -> R {
    use cache_node::clock::Clock;
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n").await;
    c.send(b"ms b%c\xc3\xa9 3 F5 T100 c\r\nxyz\r\n").await;
    let b_cas: u64 = c.line().await.trim_start_matches("HD c").parse()?;
    c.expect(b"set gone 0 -1 1\r\n1\r\n", b"STORED\r\n").await;
    c.expect(b"mg lease N30\r\n", b"HD W\r\n").await;
    let stored_at = s.clock.unix_now();
    s.clock.advance(7);
    c.send(b"gets a\r\n").await;
    let a_cas: u64 = c.line().await.rsplit(' ').next().unwrap().parse()?;
    assert_eq!(c.line().await, "1");
    assert_eq!(c.line().await, "END");
    // The bytes each takes here: a 29-byte header, 4 for client flags if any, key and value.
    let want = [
        format!(
            "key=a exp=-1 la={} cas={a_cas} fetch=yes cls=1 size={}",
            stored_at + 7,
            29 + 1 + 1
        ),
        format!(
            "key=b%25c%C3%A9 exp={} la={stored_at} cas={b_cas} fetch=no cls=1 size={}",
            stored_at + 100,
            29 + 4 + 5 + 3
        ),
    ];
    for request in [
        "lru_crawler metadump all",
        "lru_crawler metadump hash",
        "lru_crawler metadump 1",
        "lru_crawler metadump 2,1",
    ] {
        c.send(format!("{request}\r\n").as_bytes()).await;
        let mut lines: Vec<String> = read_metadump(&mut c)
            .await
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines, want, "{request}");
    }
    c.send(b"lru_crawler metadump 2\r\n").await;
    assert_eq!(read_metadump(&mut c).await, "");
    for bad in [&b"0"[..], b"64", b"x", b"1,x", b"1,,2"] {
        let mut request = b"lru_crawler metadump ".to_vec();
        request.extend_from_slice(bad);
        request.extend_from_slice(b"\r\n");
        c.expect(&request, b"BADCLASS invalid class id\r\n").await;
    }
    for unknown in [
        &b"lru_crawler\r\n"[..],
        b"lru_crawler metadump\r\n",
        b"lru_crawler metadump all extra\r\n",
        b"lru_crawler foo\r\n",
    ] {
        c.expect(unknown, b"ERROR\r\n").await;
    }
    s.stop().await;
    Ok(())
}

/// A metadump of more items than one reply batch lists each exactly once, in batches, and the
/// request pipelined after it is answered after its `END`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_crawler_metadump_of_many_items_lists_each_once() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let count = 5_000;
    c.send(&noreply_sets("item", count, &[b'v'; 100])).await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    c.send(b"lru_crawler metadump all\r\nversion\r\n").await;
    let mut text = Vec::new();
    while !(text.ends_with(b"\r\n") && text.windows(6).any(|w| w == b"\nEND\r\n")) {
        text.extend(c.read_some().await);
    }
    let text = String::from_utf8(text)?;
    let (dump, version) = text.rsplit_once("END\r\n").unwrap();
    assert!(version.starts_with("VERSION "), "{version}");
    assert!(
        dump.len() > 4 * cache_node::server::MAX_BATCH_REPLY_BYTES,
        "{}",
        dump.len()
    );
    let mut keys: Vec<&str> = dump
        .lines()
        .map(|line| {
            line.strip_prefix("key=")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), count);
    assert_eq!(dump.lines().count(), count, "an item listed twice");
    s.stop().await;
    Ok(())
}

/// `stats slabs` and `stats items` describe the size classes in use, as memcached's do: three items
/// of 100 bytes and two of 5,000 take two classes, each with chunks at least as large as its items,
/// pages whose chunks add up, and used chunks and item counts that match what was stored. Before,
/// both answered a bare `END`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_slabs_and_items_show_the_size_classes() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    for (key, len) in [
        ("s1", 100),
        ("s2", 100),
        ("s3", 100),
        ("b1", 5000),
        ("b2", 5000),
    ] {
        c.expect(&common::set_request(key, len), b"STORED\r\n")
            .await;
    }
    let slabs = c.stats("slabs").await;
    let get = |name: &str| -> u64 {
        slabs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.parse().expect("a number"))
            .unwrap_or_else(|| panic!("no {name} in {slabs:?}"))
    };
    assert_eq!(get("active_slabs"), 2, "{slabs:?}");
    // memcached's ids for its classes of 152 and 5,680 bytes, which hold such items.
    let (small, large) = (3, 19);
    assert!(get("total_malloced") >= get("3:total_pages") * get("3:chunks_per_page"));
    for (id, len, items) in [(small, 100, 3), (large, 5000, 2)] {
        let chunk = get(&format!("{id}:chunk_size"));
        assert!(
            chunk >= len + 2 && chunk < 2 * len + 64,
            "class {id}: {chunk}"
        );
        assert_eq!(get(&format!("{id}:used_chunks")), items, "class {id}");
        assert_eq!(
            get(&format!("{id}:total_chunks")),
            get(&format!("{id}:total_pages")) * get(&format!("{id}:chunks_per_page"))
        );
        assert_eq!(
            get(&format!("{id}:used_chunks"))
                + get(&format!("{id}:free_chunks"))
                + get(&format!("{id}:free_chunks_end")),
            get(&format!("{id}:total_chunks"))
        );
    }
    let items = c.stats("items").await;
    assert_eq!(
        items,
        vec![
            (format!("items:{small}:number"), "3".to_string()),
            (format!("items:{small}:evicted"), "0".to_string()),
            (format!("items:{large}:number"), "2".to_string()),
            (format!("items:{large}:evicted"), "0".to_string())
        ]
    );
    c.expect(b"stats sizes\r\n", b"END\r\n").await;
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_names_and_metrics_endpoint() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(
        b"set a 0 0 1\r\n1\r\nget a b\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
    )
    .await;
    c.expect(b"touch a 1\r\n", b"TOUCHED\r\n").await;
    let names: Vec<String> = c.stats("").await.into_iter().map(|(n, _)| n).collect();
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "rusage_user",
        "rusage_system",
        "curr_items",
        "total_items",
        "bytes",
        "limit_maxbytes",
        "get_hits",
        "get_misses",
        "get_expired",
        "get_flushed",
        "evictions",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "cmd_flush",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "cas_hits",
        "cas_misses",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "threads",
        "lease_grants",
        "lease_hot_misses",
        "lease_stale_served",
        "lease_sets_stored",
        "lease_sets_refused",
    ] {
        assert!(names.iter().any(|n| n == name), "missing stat {name}");
    }
    assert_eq!(c.stat("get_hits").await, "1");
    assert_eq!(c.stat("get_misses").await, "1");
    assert_eq!(c.stat("cmd_get").await, "2");
    assert_eq!(c.stat("cmd_touch").await, "1");
    assert_eq!(c.stat("curr_items").await, "1");
    // CPU time as memcached prints it (`%ld.%06ld`), which monitoring agents parse as a timeval.
    let cpu = c.stat("rusage_user").await;
    let (secs, micros) = cpu.split_once('.').expect("seconds.microseconds");
    assert!(
        secs.parse::<u64>().is_ok() && micros.len() == 6 && micros.parse::<u32>().is_ok(),
        "rusage_user {cpu}"
    );
    let settings = c.stats("settings").await;
    let setting = |name: &str| {
        settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(setting("item_size_max"), Some("1048576"), "{settings:?}");
    assert_eq!(setting("lease_window_secs"), Some("10"), "{settings:?}");
    assert_eq!(setting("udpport"), Some("0"), "{settings:?}");
    assert_eq!(setting("flush_enabled"), Some("yes"), "{settings:?}");
    c.expect(b"stats nonsense\r\n", b"ERROR\r\n").await;

    // Prometheus text on the metrics port.
    let body = s.scrape_metrics().await?;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("cache_node_get_hits_total 1\n"), "{body}");
    assert!(body.contains("cache_node_curr_items 1\n"), "{body}");
    // Figures that go down are gauges: a counter that decreases reads as a restart to Prometheus.
    for gauge in [
        "window_items",
        "probation_items",
        "protected_items",
        "reserved_bytes",
    ] {
        assert!(
            body.contains(&format!("# TYPE cache_node_{gauge} gauge\n")),
            "{gauge}: {body}"
        );
    }
    assert!(
        body.contains(
            "# TYPE cache_node_cpu_user_seconds_total counter\ncache_node_cpu_user_seconds_total "
        ),
        "{body}"
    );
    assert!(
        body.contains("# TYPE cache_node_lease_grants_total counter"),
        "{body}"
    );
    s.stop().await;
    Ok(())
}

/// Connections to the metrics port that send nothing hold a slot for their 5 s; past
/// `MAX_CONCURRENT_SCRAPES` of them a new connection is closed at once instead of holding a descriptor
/// too, and once they go a scrape is served again. Without the cap the extra connection waits out the
/// 5 s request deadline, and the test's 3 s wait for the close fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_caps_concurrent_requests() -> R {
    use cache_node::metrics::MAX_CONCURRENT_SCRAPES;
    let s = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let maddr = listener.local_addr()?;
    let metrics = tokio::spawn(cache_node::metrics::serve(
        listener,
        s.node.clone(),
        std::future::pending::<()>(),
    ));
    let mut idle = Vec::new();
    for _ in 0..MAX_CONCURRENT_SCRAPES {
        idle.push(tokio::net::TcpStream::connect(maddr).await?);
    }
    // Accepted in order: one more is past the cap.
    let mut extra = tokio::net::TcpStream::connect(maddr).await?;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("the connection past the cap is closed at once, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a reply");
    drop(idle);
    // The slots come back as the idle connections' reads end.
    poll_for_async(Duration::from_secs(5), async || {
        // A connection past the cap may be closed before the request is written: that is a "not yet".
        let mut http = tokio::net::TcpStream::connect(maddr)
            .await
            .map_err(|e| format!("connect to the metrics port: {e}"))?;
        http.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .map_err(|e| format!("no scrape served after the idle connections closed: {e}"))?;
        let mut body = String::new();
        let _ = http.read_to_string(&mut body).await;
        if body.starts_with("HTTP/1.1 200 OK") {
            Ok(())
        } else {
            Err("no scrape served after the idle connections closed".to_string())
        }
    })
    .await;
    metrics.abort();
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pipelined_mix_keeps_every_reply_in_sync() -> R {
    // 16 connections, each pipelining batches of 40 random set/get/delete/mg/incr requests over 64 shared
    // keys. Every reply is parsed with the shared response parser; every value read must belong to the key
    // asked for (values are "key=n"), and the reply count must match the request count: a desync, a torn
    // value or a cross-key mix-up fails the test.
    use cache_node::protocol::{parse_response, Limits, ParsedResponse, Response};
    let s = TestServer::start_with(|c| c.memory_limit_bytes = 8 << 20).await;
    let mut tasks = Vec::new();
    for conn in 0..16u64 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut next = xorshift(conn);
            for _ in 0..25 {
                let mut batch = Vec::new();
                let mut expect = Vec::new(); // (kind, key)
                for _ in 0..40 {
                    let key = format!("mix:{}", next() % 64);
                    match next() % 5 {
                        0 => {
                            let v = format!("{key}={}", next() % 1000);
                            batch.extend_from_slice(
                                format!("set {key} 0 0 {}\r\n{v}\r\n", v.len()).as_bytes(),
                            );
                            expect.push(("set", key));
                        }
                        1 | 2 => {
                            batch.extend_from_slice(format!("get {key}\r\n").as_bytes());
                            expect.push(("get", key));
                        }
                        3 => {
                            batch.extend_from_slice(format!("delete {key}\r\n").as_bytes());
                            expect.push(("delete", key));
                        }
                        _ => {
                            batch.extend_from_slice(format!("mg {key} v k\r\n").as_bytes());
                            expect.push(("mg", key));
                        }
                    }
                }
                c.send(&batch).await;
                let mut buf = Vec::new();
                let mut i = 0;
                let limits = Limits::default();
                while i < expect.len() {
                    let (kind, key) = &expect[i];
                    match parse_response(&buf, &limits) {
                        ParsedResponse::Incomplete => {
                            let more = c.read_some().await;
                            buf.extend_from_slice(&more);
                        }
                        ParsedResponse::Invalid => {
                            panic!("invalid reply {:?}", String::from_utf8_lossy(&buf))
                        }
                        ParsedResponse::Response { response, consumed } => {
                            let done = match (*kind, response) {
                                ("set", Response::Line(b"STORED")) => true,
                                ("delete", Response::Line(b"DELETED" | b"NOT_FOUND")) => true,
                                ("get", Response::Value { key: k, data, .. }) => {
                                    assert_eq!(k, key.as_bytes());
                                    assert!(data.starts_with(format!("{key}=").as_bytes()));
                                    false
                                }
                                ("get", Response::End) => true,
                                ("mg", Response::Meta { code, data, flags }) => {
                                    match &code {
                                        b"VA" => {
                                            assert_eq!(flags, format!("k{key}").as_bytes());
                                            assert!(data
                                                .unwrap()
                                                .starts_with(format!("{key}=").as_bytes()));
                                        }
                                        b"EN" => {}
                                        other => {
                                            panic!("mg reply {:?}", String::from_utf8_lossy(other))
                                        }
                                    }
                                    true
                                }
                                (kind, other) => panic!("{kind} {key}: unexpected {other:?}"),
                            };
                            buf.drain(..consumed);
                            if done {
                                i += 1;
                            }
                        }
                    }
                }
                assert!(
                    buf.is_empty(),
                    "extra bytes {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    s.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_modify_writes_lose_no_update() -> R {
    // memcached's read-modify-write commands are atomic per key: 16 connections at once, over both
    // connection threads, each send `incr`, `ma` and `append` to the same three keys in pipelined
    // batches, and run a gets/cas retry loop on a fourth. Nothing may be lost or applied twice: the incr
    // replies are exactly 1..=N (each value handed out once), `ma` likewise, every appended piece is in
    // the value once, and the cas counter ends at the number of successful cas. Shown to fail: with incr
    // done as a read and a later write (two `with_entry` calls), the incr replies repeat in every run;
    // with cas checking the token in one `with_entry` and storing in another, two cas with the same
    // token both store and the counter ends short, in every run at 200 rounds (about half at 30).
    const CONNECTIONS: usize = 16;
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 25;
    const CAS_ROUNDS: usize = 200;
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set rmw:incr 0 0 1\r\n0\r\n", b"STORED\r\n")
        .await;
    c.expect(b"set rmw:ma 0 0 1\r\n0\r\n", b"STORED\r\n").await;
    c.expect(b"set rmw:log 0 0 0\r\n\r\n", b"STORED\r\n").await;
    c.expect(b"set rmw:cas 0 0 1\r\n0\r\n", b"STORED\r\n").await;
    let mut tasks = Vec::new();
    for conn in 0..CONNECTIONS {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let (mut incrs, mut mas) = (Vec::new(), Vec::new());
            for batch in 0..BATCHES {
                let mut req = Vec::new();
                for i in 0..PER_BATCH {
                    let piece = format!("c{conn:02}-{:03};", batch * PER_BATCH + i);
                    req.extend_from_slice(b"incr rmw:incr 1\r\nma rmw:ma v\r\n");
                    req.extend_from_slice(
                        format!("append rmw:log 0 0 {}\r\n{piece}\r\n", piece.len()).as_bytes(),
                    );
                }
                c.send(&req).await;
                for _ in 0..PER_BATCH {
                    let incr = c.line().await;
                    incrs.push(
                        incr.parse::<u64>()
                            .unwrap_or_else(|_| panic!("incr: {incr}")),
                    );
                    let va = c.line().await;
                    assert!(va.starts_with("VA "), "ma: {va}");
                    let value = c.line().await;
                    mas.push(
                        value
                            .parse::<u64>()
                            .unwrap_or_else(|_| panic!("ma: {value}")),
                    );
                    assert_eq!(c.line().await, "STORED");
                }
            }
            let (mut stored, mut refused) = (0u64, 0u64);
            while stored < CAS_ROUNDS as u64 {
                c.send(b"gets rmw:cas\r\n").await;
                let header = c.line().await;
                let fields: Vec<&str> = header.split(' ').collect();
                assert_eq!(fields.len(), 5, "gets: {header}");
                let token: u64 = fields[4].parse()?;
                let n: u64 = c.line().await.parse()?;
                assert_eq!(c.line().await, "END");
                let next = (n + 1).to_string();
                c.send(format!("cas rmw:cas 0 0 {} {token}\r\n{next}\r\n", next.len()).as_bytes())
                    .await;
                match c.line().await.as_str() {
                    "STORED" => stored += 1,
                    "EXISTS" => refused += 1,
                    other => panic!("cas: {other}"),
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((incrs, mas, refused))
        }));
    }
    let (mut incrs, mut mas, mut cas_refused) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (i, m, r) = t.await?.map_err(|e| e.to_string())?;
        incrs.extend(i);
        mas.extend(m);
        cas_refused += r;
    }
    let total = (CONNECTIONS * BATCHES * PER_BATCH) as u64;
    incrs.sort_unstable();
    mas.sort_unstable();
    let each_once: Vec<u64> = (1..=total).collect();
    let distinct = |v: &[u64]| v.windows(2).filter(|w| w[0] != w[1]).count() + 1;
    assert!(
        incrs == each_once,
        "incr replies are not 1..={total} each once: {} distinct, highest {:?}",
        distinct(&incrs),
        incrs.last()
    );
    assert!(
        mas == each_once,
        "ma replies are not 1..={total} each once: {} distinct, highest {:?}",
        distinct(&mas),
        mas.last()
    );
    c.send(b"get rmw:incr rmw:ma rmw:cas rmw:log\r\n").await;
    let mut values = Vec::new();
    for _ in 0..4 {
        let header = c.line().await;
        assert!(header.starts_with("VALUE "), "get: {header}");
        values.push(c.line().await);
    }
    assert_eq!(c.line().await, "END");
    assert_eq!(values[0], total.to_string());
    assert_eq!(values[1], total.to_string());
    assert_eq!(
        values[2],
        (CONNECTIONS * CAS_ROUNDS).to_string(),
        "{cas_refused} cas refused"
    );
    let mut pieces: Vec<&str> = values[3].split_terminator(';').collect();
    assert_eq!(pieces.len() as u64, total, "appended pieces");
    pieces.sort_unstable();
    pieces.dedup();
    assert_eq!(pieces.len() as u64, total, "each appended piece once");
    s.stop().await;
    Ok(())
}

/// Waits (up to 10 s) until the server holds no room for values in flight (`reserved_bytes` 0), as once
/// the connections sending them have ended or been answered.
async fn until_nothing_is_held(c: &mut Client) {
    poll_for_async(Duration::from_secs(10), async || {
        match c.stat("reserved_bytes").await.as_str() {
            "0" => Ok(()),
            held => Err(format!("{held} bytes still held")),
        }
    })
    .await;
}

/// A large value (one with a mapping of its own: 300 KB here) is read straight into its item's memory
/// and stored there, as memcached reads a value into the item it allocated (before session 36 it went
/// into the connection's buffer and was copied): `values_read_in_place` counts each `set`, `cas`, `ms`
/// (base64 key, client flags) and `lease-set`, however the request is cut into writes (the line cut,
/// the block cut, its `\r\n` cut between the two bytes, the next request in the same write), and every
/// value comes back whole. An `add` that finds the key, an `append`, a bad `\r\n` and a client gone
/// midway store nothing in place, and the memory held for them goes back (`reserved_bytes` 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_read_into_their_items_memory() -> R {
    const LEN: usize = 300_000;
    // A request line and what follows it, as one write.
    fn request(line: &str, parts: &[&[u8]]) -> Vec<u8> {
        [&[line.as_bytes()][..], parts].concat().concat()
    }
    let s = TestServer::start().await;
    let mut c = s.client().await;
    let value = |seed: u8| -> Vec<u8> { (0..LEN).map(|i| (i as u8) ^ seed).collect() };
    let (one, two, three) = (value(1), value(2), value(3));
    let in_place =
        async |c: &mut Client| -> u64 { c.stat("values_read_in_place").await.parse().unwrap() };
    let get = async |c: &mut Client, key: &str, want: &[u8]| {
        c.send(format!("get {key}\r\n").as_bytes()).await;
        assert_eq!(c.line().await, format!("VALUE {key} 0 {}", want.len()));
        assert!(
            c.read_n(want.len() + 2).await[..want.len()] == *want,
            "{key} changed"
        );
        assert_eq!(c.line().await, "END");
    };

    // set, in pieces: the line cut, the block cut twice, its "\r\n" cut between the bytes.
    let pause = || tokio::time::sleep(Duration::from_millis(5));
    c.send(b"set bi").await;
    pause().await;
    c.send(&request(&format!("g1 0 0 {LEN}\r\n"), &[&one[..1000]]))
        .await;
    pause().await;
    c.send(&one[1000..200_000]).await;
    pause().await;
    c.send(&[&one[200_000..], &b"\r"[..]].concat()).await;
    pause().await;
    c.expect(b"\n", b"STORED\r\n").await;
    assert_eq!(in_place(&mut c).await, 1);
    get(&mut c, "big1", &one).await;

    // ms with a base64 key and flags, the next request in the same write.
    let ms = request(
        &format!("ms YmlnMg== {LEN} b F5 T0\r\n"),
        &[&two, b"\r\nmg big2 f s\r\n"],
    );
    c.expect(&ms, format!("HD\r\nHD f5 s{LEN}\r\n").as_bytes())
        .await;
    // cas with the token gets gives; a noreply set.
    c.send(b"gets big1\r\n").await;
    let header = c.line().await;
    let token = header.rsplit(' ').next().unwrap().to_string();
    c.read_n(LEN + 2 + 5).await;
    let cas = request(
        &format!("cas big1 0 0 {LEN} {token}\r\n"),
        &[&three, b"\r\n"],
    );
    c.expect(&cas, b"STORED\r\n").await;
    let quiet = request(&format!("set big3 0 0 {LEN} noreply\r\n"), &[&one, b"\r\n"]);
    c.send(&quiet).await;
    get(&mut c, "big3", &one).await;
    get(&mut c, "big1", &three).await;
    // lease-set with the token of a lease-get miss.
    let token = c.lease_get_miss("big4").await;
    let lease_set = request(
        &format!("lease-set big4 {token} 0 0 {LEN}\r\n"),
        &[&two, b"\r\n"],
    );
    c.expect(&lease_set, b"STORED\r\n").await;
    get(&mut c, "big4", &two).await;
    assert_eq!(in_place(&mut c).await, 5);

    // Stored some other way, or not at all: nothing in place, nothing left held.
    let add = request(&format!("add big1 0 0 {LEN}\r\n"), &[&one, b"\r\n"]);
    c.expect(&add, b"NOT_STORED\r\n").await;
    let append = request(&format!("append big3 0 0 {LEN}\r\n"), &[&two, b"\r\n"]);
    c.expect(&append, b"STORED\r\n").await;
    get(&mut c, "big3", &[&one[..], &two[..]].concat()).await;
    let bad = request(
        &format!("set big5 0 0 {LEN}\r\n"),
        &[&one, b"XYget big5\r\n"],
    );
    c.expect(&bad, b"CLIENT_ERROR bad data chunk\r\nEND\r\n")
        .await;
    let mut gone = s.client().await;
    gone.send(&request(
        &format!("set big6 0 0 {LEN}\r\n"),
        &[&one[..100_000]],
    ))
    .await;
    pause().await;
    drop(gone);
    until_nothing_is_held(&mut c).await;
    get(&mut c, "big1", &three).await;
    c.expect(b"get big5 big6\r\n", b"END\r\n").await;
    assert_eq!(in_place(&mut c).await, 5);
    s.stop().await;
    Ok(())
}

/// A large value whose memory cannot grow as it arrives (other values in flight hold the rest of the
/// node) is refused midway as one refused at its line is: `SERVER_ERROR out of memory storing object`,
/// the rest of its block swallowed (the next request on the connection is answered as itself), the item
/// it would have replaced removed, and nothing left held once the other values end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_refused_midway_leaves_the_connection_in_sync() -> R {
    let s = TestServer::start_with(|c| c.memory_limit_bytes = 8 << 20).await;
    let mut c = s.client().await;
    c.expect(b"set late 0 0 3\r\nold\r\n", b"STORED\r\n").await;
    let value = vec![b'v'; 1_000_000];
    c.send(b"set late 0 0 1000000\r\n").await;
    c.send(&value[..50_000]).await;
    let mut holders = Vec::new();
    for i in 0..9 {
        let mut h = s.client().await;
        h.send(format!("set h{i} 0 0 1000000\r\n").as_bytes()).await;
        h.send(&value[..900_000]).await;
        holders.push(h);
    }
    let mut watcher = s.client().await;
    poll_for_async(Duration::from_secs(20), async || {
        let held: u64 = watcher.stat("reserved_bytes").await.parse().unwrap();
        (held > 6 << 20).then_some(()).ok_or(format!("{held} held"))
    })
    .await;
    c.send(&value[50_000..]).await;
    c.expect(
        b"\r\nget late\r\n",
        b"SERVER_ERROR out of memory storing object\r\nEND\r\n",
    )
    .await;
    drop(holders);
    until_nothing_is_held(&mut c).await;
    s.stop().await;
    Ok(())
}
