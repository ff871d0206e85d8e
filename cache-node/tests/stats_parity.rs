//! `stats` counters against memcached 1.6.18: the same scripted workload on cache-node (in process, port
//! 0, `ManualClock`) and on a real `/usr/bin/memcached` (or `$MEMCACHED`), and the counters it moved must
//! move alike; then, per counting rule that once differed, a test with the exact figures (each failed
//! before its fix in `commands.rs`); and the Prometheus endpoint against `stats`.
//!
//! Not compared, because SERVER.md lists the behaviour behind them as a known difference: reads of
//! lease placeholders and stale items.
//! Without memcached the comparison fails and says to run `scripts/setup`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{noreply_sets, Client, Memcached, TestServer};

type R = Result<(), Box<dyn std::error::Error>>;

/// The counters the workload below moves, compared by how far they moved.
const COMPARED: &[&str] = &[
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "get_hits",
    "get_misses",
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
    "curr_items",
    "total_items",
];

/// Text and meta commands over hits, misses, CAS matches and mismatches, non-numeric counters and
/// noreply. `{cas:KEY}` is replaced with the CAS value KEY has on the server the request goes to.
const WORKLOAD: &[&str] = &[
    // First, while there is nothing to flush: memcached counts flushed items in curr_items until it
    // reclaims them.
    "flush_all 0\r\n",
    "set a 0 0 1\r\nx\r\n",
    "get a\r\n",
    "get b\r\n",
    "get a b a c\r\n",
    "add a 0 0 1\r\ny\r\n",
    "replace b 0 0 1\r\ny\r\n",
    "append a 0 0 1\r\nz\r\n",
    "prepend b 0 0 1\r\nz\r\n",
    "set n 0 0 1\r\n5\r\n",
    "incr n 2\r\n",
    "incr none 2\r\n",
    "decr n 1\r\n",
    "decr none 1\r\n",
    "incr a 1\r\n",
    "touch n 100\r\n",
    "touch none 100\r\n",
    "gat 100 n none\r\n",
    "gat 100 none n n\r\n",
    "cas none 0 0 1 1\r\nx\r\n",
    "cas n 0 0 1 999999\r\nx\r\n",
    "cas n 0 0 1 {cas:n}\r\n7\r\n",
    "set q 0 0 1 noreply\r\nx\r\n",
    "delete q noreply\r\n",
    "incr q 1 noreply\r\n",
    "touch q 1 noreply\r\n",
    "delete a\r\n",
    "delete a\r\n",
    "ms m 1\r\nx\r\n",
    "mg m v\r\n",
    "mg none v\r\n",
    "mg m v T100\r\n",
    "mg none v T100\r\n",
    "mg m q\r\n",
    "mg none q\r\n",
    "md m C999\r\n",
    "md m I\r\n",
    "md m\r\n",
    "md m\r\n",
    "ma c\r\n",
    "ma c N0 J5\r\n",
    "ma c\r\n",
    "ma c MD\r\n",
    "ma none MD\r\n",
    "ma c C999\r\n",
    "ms s 1\r\na\r\n",
    "ma s\r\n",
    "ms none 1 C999\r\nx\r\n",
    "ms s 1 C999\r\nx\r\n",
    "ms s 1 C{cas:s}\r\ny\r\n",
    "ms s 1 MA C999\r\nx\r\n",
    "ms s 1 ME C999\r\nx\r\n",
];

/// Sends `req` followed by `mn` and returns the reply before `MN`.
async fn exchange(c: &mut Client, req: &[u8]) -> Vec<u8> {
    c.send(req).await;
    c.send(b"mn\r\n").await;
    let mut reply = Vec::new();
    while !reply.ends_with(b"MN\r\n") {
        reply.extend(c.read_some().await);
    }
    reply.truncate(reply.len() - 4);
    reply
}

/// The CAS value of `key` on the server `c` talks to.
async fn cas_of(c: &mut Client, key: &str) -> String {
    let reply = exchange(c, format!("mg {key} c\r\n").as_bytes()).await;
    let reply = String::from_utf8(reply).unwrap();
    reply
        .trim_end()
        .strip_prefix("HD c")
        .unwrap_or_else(|| panic!("mg {key} c: {reply:?}"))
        .to_string()
}

/// One server's run of the workload.
struct Run {
    before: HashMap<String, u64>,
    after: HashMap<String, u64>,
    replies: Vec<Vec<u8>>,
    /// Bytes the workload's connection sent and received.
    sent: u64,
    received: u64,
    /// Length of the `stats` reply read before the workload.
    before_reply: u64,
}

/// Runs the workload on one server.
async fn run_workload(addr: std::net::SocketAddr) -> Run {
    let numbers = |stats: Vec<(String, String)>| -> HashMap<String, u64> {
        stats
            .into_iter()
            .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
            .collect()
    };
    // Counters from a connection of their own, so the workload's connection counts only the workload
    // (and its `mg ... c` look-ups, the same on both servers).
    let mut watcher = Client::connect(addr).await;
    let before = watcher.stats("").await;
    let before_reply = before
        .iter()
        .map(|(n, v)| format!("STAT {n} {v}\r\n").len() as u64)
        .sum::<u64>()
        + b"END\r\n".len() as u64;
    let before = numbers(before);
    let mut c = Client::connect(addr).await;
    let mut replies = Vec::new();
    let (mut sent, mut received) = (0, 0);
    for template in WORKLOAD {
        let mut req = template.to_string();
        while let Some(start) = req.find("{cas:") {
            let end = start + req[start..].find('}').unwrap();
            let key = req[start + 5..end].to_string();
            let cas = cas_of(&mut c, &key).await;
            sent += format!("mg {key} c\r\nmn\r\n").len() as u64;
            received += format!("HD c{cas}\r\nMN\r\n").len() as u64;
            req.replace_range(start..=end, &cas);
        }
        let reply = exchange(&mut c, req.as_bytes()).await;
        sent += req.len() as u64 + 4;
        received += reply.len() as u64 + 4;
        replies.push(reply);
    }
    drop(c);
    let after = numbers(watcher.stats("").await);
    Run {
        before,
        after,
        replies,
        sent,
        received,
        before_reply,
    }
}

/// The counters after the same workload, sent one request at a time to both servers, moved alike, and
/// bytes_read/bytes_written count what the connections sent and received as memcached counts them
/// (a `stats` reply is in bytes_written from the next `stats` on, its request at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_memcacheds_after_the_same_workload() -> R {
    let memcached = Memcached::start();
    let s = TestServer::start().await;
    let mc_addr: std::net::SocketAddr = ([127, 0, 0, 1], memcached.port).into();
    let mc = run_workload(mc_addr).await;
    let cn = run_workload(s.addr).await;
    for (i, (m, c)) in mc.replies.iter().zip(&cn.replies).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(c),
            String::from_utf8_lossy(m),
            "reply to {:?} (cache-node left, memcached right)",
            WORKLOAD[i]
        );
    }
    let moved = |run: &Run, name: &str| run.after[name] as i64 - run.before[name] as i64;
    let mut differ = Vec::new();
    for name in COMPARED {
        let (m, c) = (moved(&mc, name), moved(&cn, name));
        if m != c {
            differ.push(format!("{name}: memcached {m}, cache-node {c}"));
        }
    }
    for (server, run) in [("memcached", &mc), ("cache-node", &cn)] {
        let read = run.sent + b"stats\r\n".len() as u64;
        if moved(run, "bytes_read") != read as i64 {
            differ.push(format!(
                "{server}: bytes_read moved {}, sent {read}",
                moved(run, "bytes_read")
            ));
        }
        let written = run.received + run.before_reply;
        if moved(run, "bytes_written") != written as i64 {
            differ.push(format!(
                "{server}: bytes_written moved {}, received {written}",
                moved(run, "bytes_written")
            ));
        }
    }
    assert!(differ.is_empty(), "counters differ:\n{}", differ.join("\n"));
    s.stop().await;
    Ok(())
}

/// Reads the named counters on a fresh connection.
async fn counters(s: &TestServer, names: &[&str]) -> Vec<(String, String)> {
    let stats = s.client().await.stats("").await;
    names
        .iter()
        .map(|name| {
            let value = stats
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no stat {name}"));
            (name.to_string(), value.1.clone())
        })
        .collect()
}

fn expected(figures: &[(&str, u64)]) -> Vec<(String, String)> {
    figures
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// memcached 1.6.18 counts a gat/gats key as a touch only (cmd_touch and touch_hits/touch_misses),
/// not as a get: cmd_get = get_hits + get_misses. Before, each was counted as a get too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gat_and_gats_count_as_touches_not_gets() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    c.expect(b"gat 100 k none\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n")
        .await;
    c.send(b"gats 100 none k\r\n").await;
    let header = c.line().await;
    assert!(header.starts_with("VALUE k 0 1 "), "{header}");
    c.expect_reply(b"x\r\nEND\r\n").await;
    let names = [
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_touch",
        "touch_hits",
        "touch_misses",
    ];
    // memcached 1.6.18, same requests: cmd_get 0, get_hits 0, get_misses 0, cmd_touch 4,
    // touch_hits 2, touch_misses 2.
    assert_eq!(
        counters(&s, &names).await,
        expected(&[
            ("cmd_get", 0),
            ("get_hits", 0),
            ("get_misses", 0),
            ("cmd_touch", 4),
            ("touch_hits", 2),
            ("touch_misses", 2),
        ])
    );
    s.stop().await;
    Ok(())
}

/// An mg whose T touched an item is a touch hit and no get (memcached 1.6.18); one that found nothing
/// touched nothing and is a get miss. Before: a get hit or miss plus a cmd_touch without touch_hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mg_with_t_counts_a_touch_hit_or_a_get_miss() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"ms k 1\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"mg k v T100\r\n", b"VA 1\r\nx\r\n").await;
    c.expect(b"mg none v T100\r\n", b"EN\r\n").await;
    c.expect(b"mg k t\r\n", b"HD t100\r\n").await;
    let names = [
        "cmd_get",
        "get_hits",
        "get_misses",
        "cmd_touch",
        "touch_hits",
        "touch_misses",
    ];
    // memcached 1.6.18: cmd_get 2, get_hits 1, get_misses 1, cmd_touch 1, touch_hits 1, touch_misses 0.
    assert_eq!(
        counters(&s, &names).await,
        expected(&[
            ("cmd_get", 2),
            ("get_hits", 1),
            ("get_misses", 1),
            ("cmd_touch", 1),
            ("touch_hits", 1),
            ("touch_misses", 0),
        ])
    );
    s.stop().await;
    Ok(())
}

/// `md` with a CAS that does not match is a delete miss, and `md I`, which keeps the item (stale), is no
/// delete hit (memcached 1.6.18). Before: the mismatch counted nothing and `I` a delete hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md_counts_a_cas_mismatch_as_a_miss_and_an_invalidation_as_no_delete() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"ms k 1\r\nx\r\n", b"HD\r\n").await;
    c.expect(b"md k C1\r\n", b"EX\r\n").await;
    c.expect(b"md k I\r\n", b"HD\r\n").await;
    c.expect(b"md k\r\n", b"HD\r\n").await;
    c.expect(b"md k\r\n", b"NF\r\n").await;
    // memcached 1.6.18: delete_hits 1, delete_misses 2.
    assert_eq!(
        counters(&s, &["delete_hits", "delete_misses", "lease_invalidations"]).await,
        expected(&[
            ("delete_hits", 1),
            ("delete_misses", 2),
            ("lease_invalidations", 1),
        ])
    );
    s.stop().await;
    Ok(())
}

/// incr/decr count a hit only once the value was read as a number (memcached's do_add_delta): a
/// non-numeric value, an `ma` CAS mismatch and an item `ma N` created count as neither hit nor miss.
/// Before, each of them was an incr hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_ma_count_a_hit_only_for_a_number_they_changed() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set text 0 0 1\r\na\r\n", b"STORED\r\n").await;
    let non_numeric = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
    c.expect(b"incr text 1\r\n", non_numeric).await;
    c.expect(b"ma text MD\r\n", non_numeric).await;
    c.expect(b"ma n N0 J5\r\n", b"HD\r\n").await;
    c.expect(b"ma n C1\r\n", b"EX\r\n").await;
    c.expect(b"ma n v\r\n", b"VA 1\r\n6\r\n").await;
    c.expect(b"decr n 1\r\n", b"5\r\n").await;
    c.expect(b"incr none 1\r\n", b"NOT_FOUND\r\n").await;
    c.expect(b"ma none MD\r\n", b"NF\r\n").await;
    // memcached 1.6.18: incr_hits 1, incr_misses 1, decr_hits 1, decr_misses 1.
    assert_eq!(
        counters(
            &s,
            &["incr_hits", "incr_misses", "decr_hits", "decr_misses"]
        )
        .await,
        expected(&[
            ("incr_hits", 1),
            ("incr_misses", 1),
            ("decr_hits", 1),
            ("decr_misses", 1),
        ])
    );
    s.stop().await;
    Ok(())
}

/// `ms` with `C` in set or replace mode is a cas to memcached 1.6.18 (do_store_item), counted as one
/// whether or not it refills a lease; add, append and prepend with `C` are not counted as cas. Before:
/// a `C` on a missing key or on a lease placeholder counted only as a lease refill, and an append whose
/// `C` did not match as cas_badval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ms_with_c_counts_cas_as_memcached_in_every_mode() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"ms none 1 C5\r\nx\r\n", b"NF\r\n").await;
    c.send(b"mg lease N30 c\r\n").await;
    let won = c.line().await;
    let token = won
        .strip_prefix("HD c")
        .and_then(|rest| rest.strip_suffix(" W"))
        .unwrap_or_else(|| panic!("mg N: {won}"));
    c.expect(
        format!("ms lease 1 C{token}\r\nv\r\n").as_bytes(),
        b"HD\r\n",
    )
    .await;
    c.expect(b"ms lease 1 MA C1\r\nx\r\n", b"EX\r\n").await;
    c.expect(b"ms lease 1 ME C1\r\nx\r\n", b"NS\r\n").await;
    c.expect(b"ms lease 1 MR C1\r\nx\r\n", b"EX\r\n").await;
    // memcached 1.6.18 (where the placeholder is an empty item): cas_hits 1, cas_misses 1, cas_badval 1.
    assert_eq!(
        counters(
            &s,
            &[
                "cas_hits",
                "cas_misses",
                "cas_badval",
                "lease_sets_stored",
                "lease_sets_refused"
            ]
        )
        .await,
        expected(&[
            ("cas_hits", 1),
            ("cas_misses", 1),
            ("cas_badval", 1),
            ("lease_sets_stored", 1),
            ("lease_sets_refused", 1),
        ])
    );
    s.stop().await;
    Ok(())
}

/// `stats` figures the maintainer thread may change while no client sends anything.
const MOVED_BY_MAINTAINER: &[&str] = &["bytes"];

/// The metrics port serves every numeric `stats` figure with the same value, under a valid Prometheus
/// name: `cache_node_NAME` for gauges, `cache_node_NAME_total` for counters (`version` and the CPU
/// times have names of their own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_every_stat_with_its_value() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    for req in WORKLOAD.iter().filter(|r| !r.contains('{')) {
        exchange(&mut c, req.as_bytes()).await;
    }
    // The maintainer runs on in the background and may move a figure between the `stats` read and
    // the scrape: its first expiry pass over a shard sizes the shard's scratch buffer, which `bytes`
    // counts (16 B, in about 1 run of 20 here). A mismatch in such a figure alone is read again; any
    // other fails at once.
    for attempt in 1.. {
        // The `stats` reply does not count itself in bytes_written; the scrape after it does.
        c.send(b"stats\r\n").await;
        let mut reply = Vec::new();
        while !reply.ends_with(b"END\r\n") {
            reply.extend(c.read_some().await);
        }
        let stats: Vec<(String, String)> = String::from_utf8(reply.clone())?
            .lines()
            .filter_map(|l| {
                let (n, v) = l.strip_prefix("STAT ")?.split_once(' ')?;
                Some((n.to_string(), v.to_string()))
            })
            .collect();

        let response = s.scrape_metrics().await?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("");
        let mut samples = HashMap::new();
        let mut typed = HashMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                typed.insert(name.to_string(), kind.to_string());
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("sample line");
            let bare = name.split('{').next().unwrap();
            assert!(
                !bare.is_empty()
                    && !bare.starts_with(|ch: char| ch.is_ascii_digit())
                    && bare
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
                "invalid metric name {name:?}"
            );
            assert!(typed.contains_key(bare), "{bare} has no TYPE line");
            assert!(
                samples
                    .insert(bare.to_string(), value.to_string())
                    .is_none(),
                "{bare} twice"
            );
        }
        let (mut mismatches, mut moved_only) = (Vec::new(), true);
        for (name, value) in &stats {
            let (metric, want) = match name.as_str() {
                "version" => {
                    assert!(
                        body.contains(&format!("cache_node_info{{version=\"{value}\"}} 1\n")),
                        "{body}"
                    );
                    continue;
                }
                // CPU time moves between the two reads; only its presence is checked.
                "rusage_user" | "rusage_system" => {
                    let mode = &name["rusage_".len()..];
                    let metric = format!("cache_node_cpu_{mode}_seconds_total");
                    assert!(samples.contains_key(&metric), "no {metric}: {body}");
                    continue;
                }
                // The maintainer thread runs on in the background.
                "maintainer_wakeups" | "maintainer_tick_us" => {
                    let found = [
                        format!("cache_node_{name}"),
                        format!("cache_node_{name}_total"),
                    ];
                    assert!(found.iter().any(|m| samples.contains_key(m)), "no {name}");
                    continue;
                }
                "bytes_written" => {
                    let v: u64 = value.parse()?;
                    (
                        "cache_node_bytes_written_total".to_string(),
                        (v + reply.len() as u64).to_string(),
                    )
                }
                _ => {
                    let gauge = format!("cache_node_{name}");
                    let metric = if samples.contains_key(&gauge) {
                        gauge
                    } else {
                        format!("cache_node_{name}_total")
                    };
                    (metric, value.clone())
                }
            };
            if samples.get(&metric) != Some(&want) {
                mismatches.push(format!(
                    "{name} is {value} in stats, {:?} in metrics",
                    samples.get(&metric)
                ));
                moved_only &= MOVED_BY_MAINTAINER.contains(&name.as_str());
            }
        }
        if mismatches.is_empty() {
            break;
        }
        assert!(
            moved_only && attempt < 5,
            "attempt {attempt}: {mismatches:?}; metrics: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
    Ok(())
}

/// `flush_all N` takes effect a clock second before the delay is over, as in memcached 1.6.18
/// (`oldest_live = realtime(N) - 1`): `flush_all 1` hides what was stored at once. Before, cache-node
/// flushed a second later than memcached: `set k`, `flush_all 1`, `get k` returned the value (memcached
/// 1.6.18: `END`, in 8 of 8 tries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_all_with_a_delay_takes_effect_when_memcacheds_does() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    c.expect(b"flush_all 1\r\n", b"OK\r\n").await;
    c.expect(b"get k\r\n", b"END\r\n").await;
    c.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n").await;
    c.expect(b"flush_all 3 noreply\r\nmn\r\n", b"MN\r\n").await;
    s.clock.advance(1);
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n").await;
    s.clock.advance(1);
    c.expect(b"get k\r\n", b"END\r\n").await;
    // An absolute time is the same deadline.
    c.expect(b"set k 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    let at = common::START_UNIX + 2 + 3;
    c.expect(format!("flush_all {at}\r\n").as_bytes(), b"OK\r\n")
        .await;
    s.clock.advance(1);
    c.expect(b"get k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n").await;
    s.clock.advance(1);
    c.expect(b"get k\r\n", b"END\r\n").await;
    assert_eq!(
        counters(&s, &["cmd_flush"]).await,
        expected(&[("cmd_flush", 3)])
    );
    s.stop().await;
    Ok(())
}

/// `total_items` counts an incr/decr result as a new item only when it is longer than the value it
/// replaces, as memcached 1.6.18 (`do_add_delta` writes a result that fits into the old item): this
/// sequence makes 4 on memcached (checked by hand, session 27). Before, every result counted: 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arithmetic_result_counts_as_a_new_item_only_when_it_grows() -> R {
    let s = TestServer::start().await;
    let mut c = s.client().await;
    c.expect(b"set n 0 0 1\r\n8\r\n", b"STORED\r\n").await;
    c.expect(b"incr n 1\r\n", b"9\r\n").await; // 1 digit into 1: a rewrite
    c.expect(b"incr n 1\r\n", b"10\r\n").await; // 2 into 1: a new item
    c.expect(b"decr n 5\r\n", b"5\r\n").await; // a rewrite
    c.expect(b"ma n\r\n", b"HD\r\n").await; // 6: a rewrite
    c.expect(b"ma m N0 J5\r\n", b"HD\r\n").await; // created: a new item
    c.expect(b"incr m 100\r\n", b"105\r\n").await; // a new item
    assert_eq!(
        counters(&s, &["total_items"]).await,
        expected(&[("total_items", 4)])
    );
    s.stop().await;
    Ok(())
}

/// `stats reset` zeroes the store's counters too, as memcached 1.6.18 zeroes `total_items`,
/// `evictions`, `reclaimed` and the rest, and leaves the gauges (`curr_items`, `bytes`). Before,
/// only the connection counters (`cmd_get`, ...) went back to 0: `total_items` went from 5 to 0 on
/// memcached and stayed at 3 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reset_zeroes_the_store_counters_and_keeps_the_gauges() -> R {
    let s = TestServer::start_with(|c| {
        c.memory_limit_bytes = 2 << 20;
        c.store_shards = 1;
    })
    .await;
    let mut c = s.client().await;
    c.send(&noreply_sets("k", 4000, &[b'v'; 1000])).await;
    c.expect(b"mn\r\n", b"MN\r\n").await;
    let names = [
        "total_items",
        "evictions",
        "evicted_unfetched",
        "curr_items",
    ];
    let before = counters(&s, &names).await;
    let items: u64 = before[3].1.parse()?;
    assert!(
        items > 0 && before[1].1 != "0",
        "the flood evicted: {before:?}"
    );
    c.expect(b"stats reset\r\n", b"RESET\r\n").await;
    assert_eq!(
        counters(&s, &names).await,
        expected(&[
            ("total_items", 0),
            ("evictions", 0),
            ("evicted_unfetched", 0),
            ("curr_items", items),
        ])
    );
    // And they count on from 0.
    c.expect(b"set again 0 0 1\r\nx\r\n", b"STORED\r\n").await;
    assert_eq!(c.stat("total_items").await, "1");
    s.stop().await;
    Ok(())
}

/// Connection figures as memcached 1.6.18 reports them, checked on both servers: a connection alone on a
/// fresh server reads `curr_connections 1` (memcached leaves its listening socket out of it), 5 more open
/// connections make it 6 and move `total_connections` by exactly 5, and once they close it comes back
/// to 1 with `total_connections` where it was. `total_connections` is compared by how far it moves:
/// memcached also counts its listening socket in it (a first client reads 2 there with one `-l`, 1 on
/// cache-node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_counts_move_as_memcacheds() -> R {
    let memcached = Memcached::start();
    let s = TestServer::start().await;
    let mc_addr: std::net::SocketAddr = ([127, 0, 0, 1], memcached.port).into();
    for (server, addr) in [("memcached", mc_addr), ("cache-node", s.addr)] {
        connections_counted_exactly(server, addr, 5).await;
    }
    s.stop().await;
    Ok(())
}

/// Opens `extra` connections beside one that reads `stats`, closes them, and checks `curr_connections`
/// and `total_connections` at each step.
async fn connections_counted_exactly(server: &str, addr: std::net::SocketAddr, extra: u64) {
    let connections = async |c: &mut Client| -> (u64, u64) {
        let stats: HashMap<String, String> = c.stats("").await.into_iter().collect();
        let figure = |name: &str| -> u64 { stats[name].parse().unwrap() };
        (figure("curr_connections"), figure("total_connections"))
    };
    let mut watcher = Client::connect(addr).await;
    // memcached::start's probes for its port may not be closed on the server's side yet.
    let (_, total_before) = common::poll_for_async(Duration::from_secs(10), async || {
        match connections(&mut watcher).await {
            (1, total) => Ok((1, total)),
            other => Err(format!("{server}: (curr, total) {other:?} with one client")),
        }
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..extra {
        let mut c = Client::connect(addr).await;
        // Answered, so the server has taken (and counted) the connection.
        c.expect(b"mn\r\n", b"MN\r\n").await;
        open.push(c);
    }
    assert_eq!(
        connections(&mut watcher).await,
        (1 + extra, total_before + extra),
        "{server}: (curr, total) with {extra} more open"
    );
    drop(open);
    // The server sees the closes a moment later.
    common::poll_for_async(Duration::from_secs(10), async || {
        match connections(&mut watcher).await {
            (1, total) if total == total_before + extra => Ok(()),
            other => Err(format!(
                "{server}: (curr, total) {other:?} after the {extra} closed"
            )),
        }
    })
    .await;
}
