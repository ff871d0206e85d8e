//! MariaDB restarted and binlogs rotated (FLUSH BINARY LOGS) under a steady write load: squeal
//! reconnects with backoff, follows the rotations, and every committed transaction's keys reach
//! the topic, checked against the primary's own table.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use integration::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restart_and_binlog_rotation_lose_nothing() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_restart";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let squeal = Squeal::run(config, primary.password(), log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_ledger_writer(primary.url(), stop.clone(), Duration::from_millis(5));
    let first_file = primary.query("SHOW MASTER STATUS").await?[0][0]
        .clone()
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        primary.execute("FLUSH BINARY LOGS").await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    primary.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    primary.execute("FLUSH BINARY LOGS").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await?;
    assert!(written > 100, "the load wrote only {written} transactions");

    let expected = ledger_keys(primary).await?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let missing = missing_after(&mut reader, &expected, Duration::from_secs(120)).await;
    assert!(
        missing.is_empty(),
        "{} of {} committed rows never reached the topic, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    let files: std::collections::BTreeSet<_> = reader
        .records
        .iter()
        .map(|r| r.source.file.clone())
        .collect();
    assert!(
        files.len() >= 4,
        "records span the rotated binlogs: {files:?}"
    );
    let current = primary.query("SHOW MASTER STATUS").await?[0][0]
        .clone()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || checkpoint_of(checkpoint)
            .is_some_and(|(f, _)| f == current))
        .await,
        "checkpoint follows rotation from {first_file} to {current}: {:?}",
        checkpoint_of(checkpoint)
    );
    let text = squeal.log_text();
    assert!(
        text.contains("reconnecting"),
        "squeal saw the restart: {text}"
    );
    assert!(!text.contains(primary.password()));
    Ok(())
}
