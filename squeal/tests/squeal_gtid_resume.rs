//! Resume by MariaDB GTID: a checkpoint whose file and position mean nothing to the server (as
//! after moving to another server) still resumes exactly, from its GTID state, when
//! `source.resume = "gtid"`; the same checkpoint with `resume = "position"` is refused (control).

mod common;

use std::time::Duration;

use common::*;
use integration::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtid_resume_ignores_a_meaningless_file_position() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_gtid";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let write_config = |resume: &str| scenario.write_config(&format!("resume = \"{resume}\""));
    write_config("gtid")?;
    let mut squeal = Squeal::run(config, primary.password(), log)?;
    for i in 0..20 {
        primary
            .execute(&format!("INSERT INTO squeal_test.ledger (v) VALUES ({i})"))
            .await?;
    }
    let expected_first = ledger_keys(primary).await?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    assert!(
        missing_after(&mut reader, &expected_first, Duration::from_secs(60))
            .await
            .is_empty()
    );
    let state_written = eventually(Duration::from_secs(30), || {
        squeal::checkpoint::load(checkpoint)
            .ok()
            .flatten()
            .and_then(|p| p.gtid_state)
            .is_some_and(|s| s.starts_with("0-"))
    })
    .await;
    assert!(state_written, "checkpoint carries the GTID state");
    squeal.terminate();

    for i in 20..40 {
        primary
            .execute(&format!("INSERT INTO squeal_test.ledger (v) VALUES ({i})"))
            .await?;
    }
    primary.execute("FLUSH BINARY LOGS").await?;
    // The file and position now name nothing on this server.
    let mut cp = squeal::checkpoint::load(checkpoint)?.expect("checkpoint");
    cp.file = "elsewhere-bin.000777".into();
    cp.pos = 123_456;
    squeal::checkpoint::save(checkpoint, &cp)?;

    // Control: by position, this checkpoint is refused.
    write_config("position")?;
    let control_log = scenario.dir.path().join("control.log");
    let mut control = Squeal::run(config, primary.password(), &control_log)?;
    let status = control.wait_exit(Duration::from_secs(60)).expect("refused");
    assert_eq!(status.code(), Some(1), "{}", control.log_text());
    assert!(control
        .log_text()
        .contains("no longer has elsewhere-bin.000777"));

    write_config("gtid")?;
    let squeal = Squeal::run(config, primary.password(), log)?;
    for i in 40..60 {
        primary
            .execute(&format!("INSERT INTO squeal_test.ledger (v) VALUES ({i})"))
            .await?;
    }
    let expected = ledger_keys(primary).await?;
    let missing = missing_after(&mut reader, &expected, Duration::from_secs(60)).await;
    assert!(missing.is_empty(), "missing after GTID resume: {missing:?}");
    let text = squeal.log_text();
    assert!(text.contains("streaming binlog from GTID state"), "{text}");
    // Resumed after the acknowledged state: the first 20 rows were not published again.
    let first_run_keys = reader
        .records
        .iter()
        .take_while(|r| !r.keys().any(|k| k == "ledger:21"))
        .count();
    let republished = reader.records[first_run_keys..]
        .iter()
        .flat_map(|r| r.keys())
        .filter(|k| expected_first.contains(*k))
        .count();
    assert_eq!(
        republished, 0,
        "GTID resume repeated acknowledged transactions"
    );
    Ok(())
}
