//! kill -9 of squeal at 20 random moments during a steady write load, restarting each time: every
//! committed transaction's keys reach the topic at least once, checked against the primary's own
//! table. (This fails if the checkpoint ever runs ahead of Kafka's acknowledgements: e.g. saving
//! the position in `Source::commit` instead of in the ack tracker loses the in-flight records of
//! each killed run.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use common::*;
use integration::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_20_random_moments_loses_no_committed_transaction() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_kill9";
    let scenario = Scenario::ledger(&stack, topic, 3).await?;
    let primary = stack.primary();
    let (config, log) = (scenario.config.clone(), scenario.log.clone());
    let mut squeal = Squeal::run(&config, primary.password(), &log)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_ledger_writer(primary.url(), stop.clone(), Duration::from_millis(3));
    let mut kills = 0;
    for runs in 1..=20 {
        // Each moment is counted from the run's first log line, so every kill lands in a run that
        // started (a loaded machine can take longer than the shortest wait to get there).
        let started = eventually(Duration::from_secs(30), || {
            squeal.log_text().matches("squeal starting").count() == runs
        })
        .await;
        assert!(started, "run {runs} never started: {}", squeal.log_text());
        let wait = rand::rng().random_range(150..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert!(
            squeal.child.try_wait()?.is_none(),
            "squeal died by itself: {}",
            squeal.log_text()
        );
        squeal.kill9();
        kills += 1;
        squeal = Squeal::run(&config, primary.password(), &log)?;
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.await?;
    assert!(written > 200, "the load wrote only {written} transactions");

    let expected = ledger_keys(primary).await?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let missing = missing_after(&mut reader, &expected, Duration::from_secs(120)).await;
    assert!(
        missing.is_empty(),
        "{} of {} committed rows never reached the topic after {kills} kills, e.g. {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(kills, 20);
    let text = squeal.log_text();
    assert_eq!(text.matches("squeal starting").count(), 21, "21 runs");
    assert!(!text.contains(primary.password()));
    Ok(())
}
