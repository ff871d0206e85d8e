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
    let rate: u64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let seconds: u64 = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(20);
    squeal_binary()?;
    let stack = Stack::start(StackOptions::default()).await?;
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
    write_config(&config, primary.port(), &stack.kafka().brokers(), topic, &checkpoint, rules, "current")?;
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
        .set("fetch.wait.max.ms", "1")
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
            let Ok(msg) = consumer.recv().await else { continue };
            let now = Instant::now();
            let Ok(record) = invalidation::Record::from_json(msg.payload().unwrap_or_default()) else { continue };
            let mut map = recv_map.lock().unwrap();
            for key in record.keys() {
                if let Some(id) = key.strip_prefix("live:").and_then(|s| s.parse().ok()) {
                    map.entry(id).or_insert(now);
                }
            }
        }
    });

    let committed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let per_writer = Duration::from_secs_f64(WRITERS as f64 / rate as f64);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let url = primary.url();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url.as_str()).await.expect("connect");
            let mut tick = tokio::time::interval(per_writer);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while Instant::now() < deadline {
                tick.tick().await;
                conn.query_drop("INSERT INTO bench.live (v) VALUES (1)").await.expect("insert");
                let done = Instant::now();
                let id = conn.last_insert_id().expect("auto-increment id");
                committed.lock().unwrap().insert(id, done);
            }
        }));
    }
    let started = Instant::now();
    for w in writers {
        w.await?;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let total = committed.lock().unwrap().len();
    let wait_until = Instant::now() + Duration::from_secs(60);
    while received.lock().unwrap().len() < total && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer_task.abort();
    let committed = committed.lock().unwrap();
    let received = received.lock().unwrap();
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
    let worst: Vec<String> = per_second.iter().map(|(s, ms)| format!("{s}s:{ms:.0}")).collect();
    println!("worst latency per second of load (ms): {}", worst.join(" "));
    let warm: Vec<f64> = {
        let mut v: Vec<f64> = committed
            .iter()
            .filter(|(_, done)| done.saturating_duration_since(started) >= Duration::from_secs(5))
            .filter_map(|(id, done)| received.get(id).map(|r| r.saturating_duration_since(*done).as_secs_f64() * 1e3))
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
        .filter_map(|(id, done)| received.get(id).map(|r| r.saturating_duration_since(*done).as_secs_f64() * 1e3))
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
    let text = std::fs::read_to_string(&log)?;
    if let Some(addr) = text
        .lines()
        .find(|l| l.contains("metrics listening"))
        .and_then(|l| l.split("address=").nth(1))
        .map(|s| s.trim().to_string())
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        let buckets: Vec<(String, f64)> = body
            .lines()
            .filter(|l| l.starts_with("squeal_commit_to_ack_seconds_bucket"))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?.to_string();
                let n: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
                Some((le, n))
            })
            .collect();
        let count = buckets.last().map(|b| b.1).unwrap_or(0.0);
        let bound = |q: f64| {
            buckets
                .iter()
                .find(|(_, n)| *n >= q * count)
                .map(|(le, _)| le.clone())
                .unwrap_or_default()
        };
        println!(
            "squeal commit-event read -> Kafka ack (histogram, {count} transactions): p50 <= {} s, p99 <= {} s, p99.9 <= {} s",
            bound(0.5),
            bound(0.99),
            bound(0.999)
        );
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}
