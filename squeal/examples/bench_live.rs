//! Live benchmark: a steady load of single-row transactions on the primary (default 2,000/s for
//! 20 s) with squeal (release build) following; reports the latency from the client's commit
//! returning to a Kafka consumer receiving the key (p50, p99, p99.9), and squeal's own
//! commit-event→Kafka-ack histogram (bucket upper bounds).
//!
//! ```text
//! cargo build --release -p squeal && cargo run --release -p squeal --example bench_live [TXN_PER_S] [SECONDS]
//! ```
//! Everything (MariaDB, Kafka, squeal, the load and the consumer) shares this machine's cores, so
//! the end-to-end figure includes the consumer's own fetch latency and all scheduling noise.
//!
//! Knobs for comparing settings (environment variables, all optional):
//! - `BENCH_PRODUCER="k=v,k=v"`: librdkafka properties for both the baseline producer and squeal
//!   (through `[kafka.properties]`), on top of squeal's defaults;
//! - `BENCH_BROKER="k=v,k=v"`: lines appended to the broker's `server.properties` (the broker is
//!   restarted with them before anything is measured); JVM flags go through the harness's
//!   `KAFKA_HEAP_OPTS` / `KAFKA_JVM_PERFORMANCE_OPTS`;
//! - `BENCH_BASELINE_ONLY=1`: measure the plain producer only (broker and JVM comparisons);
//! - `BENCH_FETCH_WAIT_MS`: the benchmark consumer's `fetch.wait.max.ms` (default 100: a long poll
//!   that the broker answers as soon as a record arrives, without busy-polling a shared core).
//!
//! The last line, `RESULT ...`, sums the run up for scripts.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use bench_common::*;
use integration::{Stack, StackOptions};

const WRITERS: u64 = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let rate: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000);
    let seconds: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    squeal_binary()?;
    let producer_props = env_pairs("BENCH_PRODUCER");
    let broker_props = env_pairs("BENCH_BROKER");
    let baseline_only = std::env::var("BENCH_BASELINE_ONLY").is_ok_and(|v| v == "1");
    let fetch_wait_ms = std::env::var("BENCH_FETCH_WAIT_MS").unwrap_or_else(|_| "100".into());
    let stack = Stack::start(StackOptions::default()).await?;
    if !broker_props.is_empty() {
        let kafka = stack.kafka();
        kafka.stop();
        let props = kafka
            .log_path()
            .parent()
            .ok_or("no kafka folder")?
            .join("server.properties");
        let mut text = std::fs::read_to_string(&props)?;
        for (k, v) in &broker_props {
            text.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(&props, text)?;
        kafka.start().await?;
    }
    let primary = stack.primary();
    primary.execute("CREATE DATABASE bench").await?;
    primary
        .execute("CREATE TABLE bench.live (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await?;
    let topic = "bench_live";
    stack.create_topic(topic, 1).await?;
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("cp.json");
    let config = dir.path().join("squeal.toml");
    let rules = "[[rules]]\ntable = \"bench.live\"\nkeys = [\"live:{id}\"]\n";
    write_config(
        &config,
        primary.port(),
        &stack.kafka().brokers(),
        topic,
        &checkpoint,
        rules,
        "current",
    )?;
    if !producer_props.is_empty() {
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str("\n[kafka.properties]\n");
        for (k, v) in &producer_props {
            text.push_str(&format!("{k:?} = {v:?}\n"));
        }
        std::fs::write(&config, text)?;
    }
    let base = baseline(&stack, rate, seconds, &producer_props).await?;
    if baseline_only {
        println!(
            "RESULT base_p50={:.2} base_p99={:.2} base_p999={:.2}",
            base.0, base.1, base.2
        );
        return Ok(());
    }
    let log = dir.path().join("squeal.log");
    let mut child = spawn_squeal(&config, primary.password(), &log)?;
    // Wait until squeal streams (it writes its start checkpoint first).
    while checkpoint_of(&checkpoint).is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let received: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let consumer: StreamConsumer = stack
        .kafka()
        .client_config()
        .set("group.id", "bench-live")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", &fetch_wait_ms)
        .set("fetch.min.bytes", "1")
        .set("socket.nagle.disable", "true")
        .create()?;
    consumer.subscribe(&[topic])?;
    // Start measuring only once the consumer owns the partition (a group join takes seconds).
    let joined = Instant::now();
    while consumer.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        if joined.elapsed() > Duration::from_secs(60) {
            return Err("the benchmark consumer got no partition".into());
        }
    }
    let recv_map = received.clone();
    let consumer_task = tokio::spawn(async move {
        loop {
            let Ok(msg) = consumer.recv().await else {
                continue;
            };
            let now = Instant::now();
            let Ok(record) = invalidation::Record::from_json(msg.payload().unwrap_or_default())
            else {
                continue;
            };
            let mut map = recv_map.lock().unwrap();
            for key in record.keys() {
                if let Some(id) = key.strip_prefix("live:").and_then(|s| s.parse().ok()) {
                    map.entry(id).or_insert(now);
                }
            }
        }
    });

    let committed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let writers = spawn_writers(
        primary.url(),
        "bench.live",
        rate,
        seconds,
        committed.clone(),
    );
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let warm_snapshot = squeal_histogram(&log).await.unwrap_or_default();
    let pids = [
        ("kafka", stack.kafka().pid()),
        ("mariadb", primary.pid()),
        ("squeal", Some(child.id())),
        ("bench", Some(std::process::id())),
    ];
    let waited_before: Vec<u64> = pids.iter().map(|(_, p)| runqueue_wait_ns(*p)).collect();
    let measured_from = Instant::now();
    for w in writers {
        w.await?;
    }
    let measured_secs = measured_from.elapsed().as_secs_f64();
    let cpu_wait: Vec<String> = pids
        .iter()
        .zip(waited_before)
        .map(|((name, pid), before)| {
            let ms = runqueue_wait_ns(*pid).saturating_sub(before) as f64 / 1e6;
            format!("{name} {:.0}", ms / measured_secs)
        })
        .collect();
    let cpu_wait = cpu_wait.join(", ");
    println!(
        "time spent runnable but waiting for a CPU after the warm-up (ms per second, all threads): {cpu_wait}; load average {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().next().unwrap_or("?")
    );
    let load_secs = started.elapsed().as_secs_f64();
    let total = committed.lock().unwrap().len();
    let wait_until = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < total && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer_task.abort();
    let committed = committed.lock().unwrap().clone();
    let received = received.lock().unwrap().clone();
    // Per second of the run: the worst latency, to tell a warm-up stall from steady-state tails.
    let mut per_second: std::collections::BTreeMap<u64, f64> = Default::default();
    for (id, done) in committed.iter() {
        if let Some(r) = received.get(id) {
            let sec = done.saturating_duration_since(started).as_secs();
            let ms = r.saturating_duration_since(*done).as_secs_f64() * 1e3;
            let e = per_second.entry(sec).or_insert(0.0);
            *e = e.max(ms);
        }
    }
    let worst: Vec<String> = per_second
        .iter()
        .map(|(s, ms)| format!("{s}s:{ms:.0}"))
        .collect();
    println!("worst latency per second of load (ms): {}", worst.join(" "));
    let warm: Vec<f64> = {
        let mut v: Vec<f64> = committed
            .iter()
            .filter(|(_, done)| done.saturating_duration_since(started) >= Duration::from_secs(5))
            .filter_map(|(id, done)| {
                received
                    .get(id)
                    .map(|r| r.saturating_duration_since(*done).as_secs_f64() * 1e3)
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v
    };
    if !warm.is_empty() {
        println!(
            "after a 5 s warm-up ({} txns), ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            warm.len(),
            quantile(&warm, 0.5),
            quantile(&warm, 0.99),
            quantile(&warm, 0.999),
            warm.last().copied().unwrap_or(0.0)
        );
    }
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(id, done)| {
            received
                .get(id)
                .map(|r| r.saturating_duration_since(*done).as_secs_f64() * 1e3)
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let missing = total - latencies.len();
    println!(
        "live load: {total} transactions in {load_secs:.1} s = {:.0} txn/s (asked {rate}/s), {missing} not seen on the topic",
        total as f64 / load_secs
    );
    println!(
        "client commit returned -> consumer received, ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0.0)
    );
    let end_snapshot = squeal_histogram(&log).await.unwrap_or_default();
    let mut squeal_warm_bounds = String::new();
    for (label, hist) in [
        ("whole run", end_snapshot.clone()),
        (
            "after the 5 s warm-up",
            end_snapshot
                .iter()
                .map(|(le, n)| {
                    let before = warm_snapshot
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |b| b.1);
                    (le.clone(), n - before)
                })
                .collect(),
        ),
    ] {
        let count = hist.last().map(|b| b.1).unwrap_or(0.0);
        let bound = |q: f64| {
            hist.iter()
                .find(|(_, n)| *n >= q * count)
                .map(|(le, _)| le.clone())
                .unwrap_or_default()
        };
        println!(
            "squeal commit-event read -> Kafka ack, {label} ({count} transactions): p50 <= {} s, p99 <= {} s, p99.9 <= {} s",
            bound(0.5),
            bound(0.99),
            bound(0.999)
        );
        squeal_warm_bounds = format!(
            "sq_p50_le={} sq_p99_le={} sq_p999_le={}",
            bound(0.5),
            bound(0.99),
            bound(0.999)
        );
    }
    if !warm.is_empty() {
        println!(
            "RESULT base_p50={:.2} base_p99={:.2} base_p999={:.2} e2e_p50={:.2} e2e_p99={:.2} e2e_p999={:.2} {squeal_warm_bounds} missing={missing} cpu_wait_ms_per_s=[{cpu_wait}]",
            base.0,
            base.1,
            base.2,
            quantile(&warm, 0.5),
            quantile(&warm, 0.99),
            quantile(&warm, 0.999),
        );
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// squeal's commit→ack histogram buckets (upper bound, cumulative count), scraped from its metrics.
async fn squeal_histogram(log: &std::path::Path) -> Option<Vec<(String, f64)>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = std::fs::read_to_string(log).ok()?;
    let addr = text
        .lines()
        .find(|l| l.contains("metrics listening"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|s| s.trim().to_string())?;
    let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("squeal_commit_to_ack_seconds_bucket"))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
                let n: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
                Some((le, n))
            })
            .collect(),
    )
}

/// `rate` autocommit single-row INSERTs per second into `table` for `seconds`, over WRITERS
/// connections; records each id's commit-returned instant.
fn spawn_writers(
    url: String,
    table: &'static str,
    rate: u64,
    seconds: u64,
    committed: Arc<Mutex<HashMap<u64, Instant>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let per_writer = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    (0..WRITERS)
        .map(|_| {
            let url = url.clone();
            let committed = committed.clone();
            tokio::spawn(async move {
                let mut conn = mysql_async::Conn::from_url(url.as_str())
                    .await
                    .expect("connect");
                let mut tick = tokio::time::interval(per_writer);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while Instant::now() < deadline {
                    tick.tick().await;
                    conn.query_drop(format!("INSERT INTO {table} (v) VALUES (1)"))
                        .await
                        .expect("insert");
                    let done = Instant::now();
                    let id = conn.last_insert_id().expect("auto-increment id");
                    committed.lock().unwrap().insert(id, done);
                }
            })
        })
        .collect()
}

/// The floor squeal is compared with: the same database load, and a plain idempotent rdkafka
/// producer (acks=all, linger 1 ms, Nagle off, as squeal's) sending `rate` records/s of the same
/// size to the same broker; latency from send to acknowledgement.
/// Returns its p50, p99 and p99.9 in ms.
async fn baseline(
    stack: &Stack,
    rate: u64,
    seconds: u64,
    extra: &[(String, String)],
) -> Result<(f64, f64, f64), BoxError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let primary = stack.primary();
    primary
        .execute("CREATE TABLE bench.base (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await?;
    stack.create_topic("bench_baseline", 1).await?;
    let mut config = stack.kafka().client_config();
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("socket.nagle.disable", "true");
    for (k, v) in extra {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create()?;
    let writers = spawn_writers(primary.url(), "bench.base", rate, seconds, Arc::default());
    let payload = br#"{"v":1,"source":{"server_id":1,"file":"binlog.000001","pos":123456,"gtid":"0-1-12345"},"commit_ts":1700000000,"chunk":{"index":0,"last":true},"changes":[{"table":{"db":"bench","name":"live"},"op":"insert","keys":["live:12345"]}]}"#;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let sent = Instant::now();
        let key = format!("k{}", pending.len());
        let delivery = producer
            .send_result(
                FutureRecord::to("bench_baseline")
                    .key(&key)
                    .payload(&payload[..]),
            )
            .map_err(|(e, _)| e)?;
        pending.push(tokio::spawn(async move {
            let _ = delivery.await;
            (sent, sent.elapsed().as_secs_f64() * 1e3)
        }));
    }
    let mut latencies = Vec::new();
    for p in pending {
        let (sent, ms) = p.await?;
        if sent.saturating_duration_since(started) >= Duration::from_secs(5) {
            latencies.push(ms);
        }
    }
    for w in writers {
        w.await?;
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "baseline: plain producer send -> ack at {rate}/s beside the same DB load, after a 5 s warm-up ({} records), ms: p50 {:.2}  p99 {:.2}  p99.9 {:.2}",
        latencies.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999)
    );
    Ok((
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
    ))
}

/// Total time all threads of `pid` spent runnable but waiting for a CPU (`/proc/PID/task/*/schedstat`,
/// second field), in ns: how much the machine's other load delays a process.
fn runqueue_wait_ns(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// `k=v,k=v` pairs from an environment variable.
fn env_pairs(name: &str) -> Vec<(String, String)> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
