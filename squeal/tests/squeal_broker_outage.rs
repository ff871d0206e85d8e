//! Kafka stopped for 20 s under a steady write load, with a kill -9 of squeal in the middle of the
//! outage: nothing is dropped, the checkpoint does not move while Kafka cannot acknowledge, and
//! once the broker is back every committed transaction's keys reach the topic.
//! (Without ack-ordered checkpointing the checkpoint would advance during the outage and the
//! kill would lose what was buffered; both assertions below then fail.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use integration::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_20s_drops_nothing_and_holds_the_checkpoint() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_outage";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let mut squeal = Squeal::run(config, primary.password(), log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = spawn_ledger_writer(primary.url(), stop.clone(), Duration::from_millis(5));
    // The first checkpoint comes after start-up checks against the primary and the first acks.
    assert!(
        eventually(Duration::from_secs(30), || checkpoint_of(checkpoint)
            .is_some())
        .await,
        "squeal checkpoints while Kafka is up"
    );
    // A moment of steady load, so records are in flight when the broker goes.
    tokio::time::sleep(Duration::from_secs(1)).await;

    stack.kafka().stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = checkpoint_of(checkpoint);
    let rows_at_hold = primary
        .query("SELECT COUNT(*) FROM squeal_test.ledger")
        .await?;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        checkpoint_of(checkpoint),
        held,
        "checkpoint moved while Kafka was down"
    );
    assert!(
        squeal.child.try_wait()?.is_none(),
        "squeal must wait, not exit: {}",
        squeal.log_text()
    );
    squeal.kill9();
    squeal = Squeal::run(config, primary.password(), log)?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        checkpoint_of(checkpoint),
        held,
        "checkpoint moved while Kafka was down (after restart)"
    );
    let rows_now = primary
        .query("SELECT COUNT(*) FROM squeal_test.ledger")
        .await?;
    assert_ne!(
        rows_at_hold, rows_now,
        "the load kept writing during the outage"
    );

    stack.kafka().start().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await?;
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
    let after = checkpoint_of(checkpoint);
    assert!(
        eventually(Duration::from_secs(30), || checkpoint_of(checkpoint)
            != held)
        .await,
        "checkpoint resumes after the outage: {after:?}"
    );
    assert!(squeal.child.try_wait()?.is_none(), "{}", squeal.log_text());
    Ok(())
}
