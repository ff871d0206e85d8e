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

/// While Kafka holds one record, transactions on a table no rule names publish nothing and so take
/// no `max_in_flight` permit; their ends still queue behind that record for the checkpoint. squeal
/// must stop reading once `tracked_capacity(max_in_flight)` of them wait, not read on and queue one
/// per transaction for as long as the outage lasts (memory without bound: each end holds a
/// position with its GTID state). With the queue unbounded, the reader went through all 1,000
/// transactions below (5,006 events) with Kafka down, and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unruled_transactions_during_an_outage_stop_the_reader_at_the_bound() -> TestResult {
    use mysql_async::prelude::Queryable;

    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_outage_bound";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    primary
        .execute(
            "CREATE TABLE squeal_test.noise (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)",
        )
        .await?;
    const MAX_IN_FLIGHT: usize = 10;
    scenario.edit_config(
        &format!("topic = \"{topic}\""),
        &format!("topic = \"{topic}\"\nmax_in_flight = {MAX_IN_FLIGHT}"),
    )?;
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let squeal = Squeal::run(config, primary.password(), log)?;
    insert_ledger_ids(primary, [1]).await?;
    assert!(
        eventually(Duration::from_secs(30), || checkpoint_of(checkpoint)
            .is_some())
        .await,
        "squeal checkpoints while Kafka is up"
    );
    let address = metrics_address(&squeal.log_text()).expect("metrics address logged");
    let events_read = || async {
        let text = scrape(&address).await?;
        Ok::<f64, std::io::Error>(metric(&text, "squeal_events_read_total").unwrap_or(-1.0))
    };

    stack.kafka().stop();
    // One ruled row: its record waits for Kafka, and every transaction end after it waits too.
    insert_ledger_ids(primary, [2]).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = checkpoint_of(checkpoint);
    let before = events_read().await?;
    let mut conn = mysql_async::Conn::from_url(primary.url().as_str()).await?;
    for v in 0..1000 {
        conn.query_drop(format!("INSERT INTO squeal_test.noise (v) VALUES ({v})"))
            .await?;
    }
    drop(conn);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = events_read().await? - before;
    // A MariaDB row transaction is 4-5 events (GTID, annotate, table map, rows, XID), so the
    // 1,000 are about 5,000 events (5,006 read with the queue unbounded). The queue lets
    // tracked_capacity(10) = 20 ends wait: 90 events were read. The bound is a tenth of all.
    let bound = 500.0;
    eprintln!("events read with Kafka down: {read} (at most {bound})");
    assert!(
        read <= bound,
        "with Kafka down and one record unacknowledged, squeal read {read} events of 1,000 unruled \
         transactions; at most {bound} expected (the reader must stop)"
    );
    assert_eq!(
        checkpoint_of(checkpoint),
        held,
        "checkpoint moved while Kafka was down"
    );

    stack.kafka().start().await?;
    let end = master_position(primary).await?;
    assert!(
        eventually(Duration::from_secs(60), || checkpoint_of(checkpoint)
            .as_ref()
            == Some(&end))
        .await,
        "after the outage squeal reads the rest and checkpoints the binlog's end {end:?}: at {:?}\n{}",
        checkpoint_of(checkpoint),
        squeal.log_text()
    );
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let missing = missing_after(
        &mut reader,
        &ledger_keys_of([1, 2]),
        Duration::from_secs(60),
    )
    .await;
    assert!(missing.is_empty(), "never published: {missing:?}");
    Ok(())
}
