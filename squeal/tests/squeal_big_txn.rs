//! A 1,000,000-row transaction is published completely, in bounded-size chunks, after its commit,
//! with squeal's peak RSS under 256 MB (keys past the in-memory window spill to a temporary file).
//! Also checks the Prometheus metrics on the way.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use integration::{Stack, StackOptions};

const ROWS: u64 = 1_000_000;
const RSS_LIMIT_KIB: u64 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_in_bounded_memory() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_big";
    let primary = stack.primary();
    primary.execute("CREATE DATABASE squeal_test").await?;
    primary
        .execute("CREATE TABLE squeal_test.big (id INT PRIMARY KEY, v INT, s VARCHAR(20))")
        .await?;
    let rules = r#"
[[rules]]
table = "squeal_test.big"
keys = ["big:{id}"]

[transactions]
max_buffered_keys = 100000
"#;
    let scenario = Scenario::new(&stack, topic, 1, rules).await?;
    let (config, checkpoint, log) = (
        scenario.config.clone(),
        scenario.checkpoint.clone(),
        scenario.log.clone(),
    );
    let squeal = Squeal::run(&config, primary.password(), &log)?;
    let started = Instant::now();
    primary
        .execute(&format!(
            "INSERT INTO squeal_test.big SELECT seq, seq, CONCAT('s', seq) FROM squeal_test.seq_1_to_{ROWS}"
        ))
        .await?;
    let end = primary.query("SHOW MASTER STATUS").await?;
    let (end_file, end_pos): (String, u64) = (
        end[0][0].clone().unwrap(),
        end[0][1].clone().unwrap().parse()?,
    );

    let mut peak = 0;
    let done = loop {
        peak = peak.max(squeal.peak_rss_kib().unwrap_or(0));
        if checkpoint_of(&checkpoint).is_some_and(|(f, p)| f == end_file && p >= end_pos) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(600) || squeal.peak_rss_kib().is_none() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    peak = peak.max(squeal.peak_rss_kib().unwrap_or(0));
    assert!(
        done,
        "the transaction was not acknowledged in time: {}",
        squeal.log_text()
    );
    println!(
        "1M-row transaction: acknowledged after {:?}, peak RSS {} MiB",
        started.elapsed(),
        peak / 1024
    );
    assert!(peak > 0 && peak < RSS_LIMIT_KIB, "peak RSS {peak} KiB");

    let metrics =
        scrape(&metrics_address(&squeal.log_text()).expect("metrics address logged")).await?;
    assert!(
        metric(&metrics, "squeal_rows_read_total").unwrap() >= ROWS as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "squeal_keys_published_total"),
        Some(ROWS as f64),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "squeal_keys_spilled_total").unwrap() >= 900_000.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "squeal_records_in_flight"), Some(0.0));
    assert!(metrics.contains("squeal_commit_to_ack_seconds_count"));

    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let complete = reader
        .read_until(Duration::from_secs(120), |r| {
            r.last().is_some_and(|r| r.chunk.last)
        })
        .await;
    assert!(
        complete,
        "read {} records, no last chunk",
        reader.records.len()
    );
    let mut keys = HashSet::new();
    for (i, r) in reader.records.iter().enumerate() {
        assert_eq!(r.chunk.index as usize, i, "chunks in order");
        assert_eq!(r.chunk.last, i + 1 == reader.records.len());
        assert!(r.to_json().len() <= invalidation::DEFAULT_MAX_RECORD_BYTES);
        keys.extend(r.keys().map(str::to_owned));
    }
    assert_eq!(keys.len() as u64, ROWS);
    assert!((1..=ROWS).all(|i| keys.contains(&format!("big:{i}"))));
    Ok(())
}
