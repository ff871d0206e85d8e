//! "Seconds behind source" stays true on an idle server: after catching up with old events, the
//! server's heartbeats bring it to 0. Control: with heartbeats off (`heartbeat_ms = 0`, as a
//! replica's `MASTER_HEARTBEAT_PERIOD = 0`), the gauge keeps the age of the last event (so the test
//! fails if heartbeats are not requested or not handled, or if 0 asks for them: until 2026-12-01 it
//! asked for one every millisecond).
//! No record is published (no ruled table is written), so Kafka is not needed.

mod common;

use std::time::Duration;

use common::*;
use integration::{Stack, StackOptions};

/// The gauge once squeal has read events, then every 500 ms for up to `readings` readings, stopping
/// early at 0. Start-up (checks, and the offline producer's warm-up) is not counted in the readings: it
/// has a minute of its own.
async fn lag_after_idle(
    stack: &Stack,
    heartbeat_ms: u64,
    name: &str,
    readings: usize,
) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let primary = stack.primary();
    let scenario = Scenario::offline(primary.port(), "")?;
    scenario.edit_config(
        "heartbeat_ms = 500",
        &format!("heartbeat_ms = {heartbeat_ms}"),
    )?;
    let Scenario { config, dir, .. } = &scenario;
    let log = dir.path().join(format!("{name}.log"));
    let squeal = Squeal::run(config, primary.password(), &log)?;
    let mut last = f64::NAN;
    let mut taken = 0;
    let start_deadline = std::time::Instant::now() + Duration::from_secs(60);
    while taken < readings && (taken > 0 || std::time::Instant::now() < start_deadline) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(addr) = metrics_address(&squeal.log_text()) else {
            continue;
        };
        let Ok(text) = scrape(&addr).await else {
            continue;
        };
        if metric(&text, "squeal_events_read_total").unwrap_or(0.0) > 0.0 {
            taken += 1;
            last = metric(&text, "squeal_seconds_behind_source").unwrap_or(f64::NAN);
            if last == 0.0 {
                break;
            }
        }
    }
    Ok(last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_seconds_behind_true_when_idle() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    stack
        .primary()
        .execute("CREATE TABLE squeal_demo.unruled_lag (id INT PRIMARY KEY)")
        .await?;
    stack
        .primary()
        .execute("INSERT INTO squeal_demo.unruled_lag VALUES (1)")
        .await?;
    // Let the newest event age, then catch up with it from the earliest binlog.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let control = lag_after_idle(&stack, 0, "control", 10).await?;
    assert!(
        control >= 5.0,
        "with heartbeats off the gauge shows the last event's age: {control}"
    );
    let with_heartbeats = lag_after_idle(&stack, 300, "heartbeats", 40).await?;
    assert_eq!(
        with_heartbeats, 0.0,
        "heartbeats report an idle, caught-up source as 0 s behind"
    );
    Ok(())
}
