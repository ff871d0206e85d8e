//! Failure modes outside the outage, crash and restart tests, on the real stack (MariaDB + Kafka):
//! - `RESET MASTER` while squeal runs, or while it is stopped: the binlog file squeal reads is
//!   created anew under the same name, and the position squeal reconnects (or restarts) at may be a
//!   transaction boundary in the new file. squeal used to resume there and skip every transaction
//!   before it in silence (the tests fail without the check of the file's creation date,
//!   `Progress::same_file`, and without that date in the checkpoint); now it stops.
//! - Two squeals with one server_id: the server ends one's stream whenever the other connects;
//!   both used to reconnect for ever, now one stops with the reason.
//! - Kafka refusing for good (a record over the topic's `max.message.bytes`, the topic deleted):
//!   squeal stops with the broker's reason, the checkpoint before the unacknowledged transaction,
//!   and a restart refuses again rather than skip it.
//! - A key longer than any record can hold (a rule over a long text column): squeal publishes a
//!   `flush_table` for its table and runs on; before, Kafka refused the record for good and squeal
//!   stopped on it at every restart, holding every later invalidation.
//! - A checkpoint that cannot be written (its folder made immutable): squeal stops; a checkpoint
//!   that cannot be read (empty, truncated, incomplete): `run` refuses to start, the file untouched.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use common::*;
use integration::{Stack, StackOptions};

/// An admin client of the stack's broker.
fn admin(stack: &Stack) -> AdminClient<DefaultClientContext> {
    stack
        .kafka()
        .client_config()
        .create()
        .expect("admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Waits until the checkpoint reaches `at`; false after `timeout`.
async fn checkpoint_reaches(checkpoint: &Path, at: &(String, u64), timeout: Duration) -> bool {
    eventually(timeout, || checkpoint_of(checkpoint).as_ref() == Some(at)).await
}

/// Starts squeal on `config`, writes ledger rows 1 and 2, and returns it once `checkpoint` is past
/// them (failing the test after 60 s), with the binlog position after them.
async fn run_past_two_rows(
    primary: &integration::MariaDb,
    config: &Path,
    checkpoint: &Path,
    log: &Path,
) -> Result<(Squeal, (String, u64)), Box<dyn std::error::Error + Send + Sync>> {
    let squeal = Squeal::run(config, primary.password(), log)?;
    insert_ledger_ids(primary, 1..3).await?;
    let after = master_position(primary).await?;
    assert!(
        checkpoint_reaches(checkpoint, &after, Duration::from_secs(60)).await,
        "two small rows are published and checkpointed: {}",
        squeal.log_text()
    );
    Ok((squeal, after))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_master_while_running_stops_instead_of_skipping() -> TestResult {
    reset_master_under_squeal(false, "inv_reset_master").await
}

/// The same with squeal stopped across the RESET MASTER: the checkpoint carries its file's date
/// (`Position::file_created`), so the restart is refused. Without the date in the checkpoint,
/// the restarted squeal resumes in the new file at the old position and skips rows 201-220.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_master_while_stopped_is_refused_at_restart() -> TestResult {
    reset_master_under_squeal(true, "inv_reset_master_restart").await
}

/// RESET MASTER, then the same statements, so that the new file reaches squeal's position at a
/// transaction boundary; squeal runs throughout, or (`restart`) is stopped across the reset and
/// started again from its checkpoint. Either way it must stop rather than read on from there.
async fn reset_master_under_squeal(restart: bool, topic: &str) -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    // A clean binlog.000001, so that the same statements after the second RESET MASTER lay out
    // the new file byte for byte like the first one: squeal's position is then a boundary in it.
    primary.execute("RESET MASTER").await?;
    let mut squeal = Squeal::run(config, primary.password(), log)?;
    insert_ledger_ids(primary, 101..121).await?;
    let end = master_position(primary).await?;
    assert!(
        checkpoint_reaches(checkpoint, &end, Duration::from_secs(60)).await,
        "squeal acknowledged the first rows: {:?} vs {end:?}\n{}",
        checkpoint_of(checkpoint),
        squeal.log_text()
    );
    // The new file's format description must be dated later than the first one's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if restart {
        assert!(squeal.terminate().is_some(), "squeal stops on SIGTERM");
        assert_eq!(checkpoint_of(checkpoint), Some(end.clone()));
    }
    primary
        .execute(
            "SET sql_log_bin=0; DELETE FROM squeal_test.ledger; SET sql_log_bin=1; RESET MASTER",
        )
        .await?;
    insert_ledger_ids(primary, 201..221).await?;
    assert_eq!(
        master_position(primary).await?,
        end,
        "the new file reached the same position"
    );
    // Past the old position: the server ends the old stream and squeal reconnects at `end`.
    insert_ledger_ids(primary, 301..311).await?;
    if restart {
        squeal = Squeal::run(
            config,
            primary.password(),
            &log.with_extension("restart.log"),
        )?;
    }

    let after_reset = ledger_keys_of((201..221).chain(301..311));
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let mut exited = None;
    for _ in 0..60 {
        reader
            .read_until(Duration::from_millis(500), |_| false)
            .await;
        exited = squeal.child.try_wait()?;
        if exited.is_some() {
            break;
        }
    }
    let text = squeal.log_text();
    let missing: Vec<_> = after_reset
        .difference(&reader.all_keys())
        .cloned()
        .collect();
    assert!(
        exited.is_some() || missing.is_empty(),
        "squeal runs on after RESET MASTER with {} committed rows never published (e.g. {:?}):\n{text}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let status = exited.expect("squeal stopped");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("was created anew"), "{text}");
    assert!(text.contains("RESET MASTER"), "{text}");
    assert!(text.contains("move the checkpoint file aside"), "{text}");
    assert_eq!(checkpoint_of(checkpoint), Some(end), "the checkpoint stays");
    assert!(!text.contains(primary.password()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_the_topics_max_message_bytes_stops_and_holds_the_checkpoint() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_too_large";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let results = admin(&stack)
        .alter_configs(
            [&AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", "2000")],
            &admin_options(),
        )
        .await?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let (mut squeal, before) = run_past_two_rows(primary, config, checkpoint, log).await?;
    // One transaction of 500 keys: one record of ~8 KB, over the topic's 2000 bytes.
    let values: Vec<String> = (1..=500).map(|v| format!("({v})")).collect();
    primary
        .execute(&format!(
            "INSERT INTO squeal_test.ledger (v) VALUES {}",
            values.join(",")
        ))
        .await?;
    insert_ledger_ids(primary, 1000..1003).await?;
    let status = squeal
        .wait_exit(Duration::from_secs(120))
        .expect("squeal stops on a record Kafka refuses for good");
    let text = squeal.log_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("Kafka (permanent)"), "{text}");
    assert!(text.contains("Message size too large"), "{text}");
    assert_eq!(
        checkpoint_of(checkpoint),
        Some(before.clone()),
        "the checkpoint stays before the refused transaction"
    );

    // A restart meets the same record and stops again: nothing is skipped.
    let mut again = Squeal::run(config, primary.password(), log)?;
    let status = again
        .wait_exit(Duration::from_secs(120))
        .expect("the restart stops too");
    assert_eq!(status.code(), Some(1), "{}", again.log_text());
    assert_eq!(checkpoint_of(checkpoint), Some(before));
    Ok(())
}

/// A key no record of `max_record_bytes` can hold (a 10,000-byte slug under a 4,096-byte limit)
/// gives its table's flush, logged, and squeal runs on to the next transaction's key. Without the
/// flush the key goes alone into a record Kafka refuses (`message.max.bytes` is 4,096 + 4 KiB),
/// squeal stops with exit 1, and this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_longer_than_a_record_flushes_its_table_and_squeal_runs_on() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_long_key";
    let primary = stack.primary();
    primary
        .execute("CREATE DATABASE IF NOT EXISTS squeal_test")
        .await?;
    primary
        .execute("CREATE TABLE squeal_test.docs (id INT PRIMARY KEY, slug TEXT NOT NULL)")
        .await?;
    let rules = r#"
[[rules]]
table = "squeal_test.docs"
keys = ["doc:{slug}"]
"#;
    let scenario = Scenario::new(&stack, topic, 1, rules).await?;
    scenario.edit_config(
        &format!("topic = \"{topic}\""),
        &format!("topic = \"{topic}\"\nmax_record_bytes = 4096"),
    )?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    primary
        .execute(&format!(
            "INSERT INTO squeal_test.docs VALUES (1, '{}')",
            "x".repeat(10_000)
        ))
        .await?;
    primary
        .execute("INSERT INTO squeal_test.docs VALUES (2, 'short')")
        .await?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let reached = reader
        .read_until(Duration::from_secs(60), |records| {
            records.iter().any(|r| r.keys().any(|k| k == "doc:short"))
        })
        .await;
    let text = squeal.log_text();
    assert!(
        reached,
        "the next transaction's key was never published:\n{text}"
    );
    assert!(
        squeal.child.try_wait()?.is_none(),
        "squeal runs on:\n{text}"
    );
    assert!(
        reader
            .records
            .iter()
            .any(|r| r.flushed_tables().any(|t| t.name == "docs")),
        "squeal_test.docs was flushed"
    );
    assert!(
        reader.all_keys().iter().all(|k| k.len() < 100),
        "the long key was not published"
    );
    assert!(
        text.contains("a key longer than a record can hold"),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_deleted_while_running_stops_and_holds_the_checkpoint() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_deleted";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        ..
    } = &scenario;
    let (mut squeal, before) = run_past_two_rows(primary, config, checkpoint, log).await?;
    let results = admin(&stack)
        .delete_topics(&[topic], &admin_options())
        .await?;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    insert_ledger_ids(primary, 10..13).await?;
    // librdkafka notices the deletion at its next metadata refresh (tens of seconds).
    let status = squeal
        .wait_exit(Duration::from_secs(180))
        .expect("squeal stops when its topic is gone");
    let text = squeal.log_text();
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("Kafka (permanent)"), "{text}");
    assert_eq!(
        checkpoint_of(checkpoint),
        Some(before),
        "the checkpoint stays before the unpublished rows"
    );
    // A restart refuses the missing topic at once.
    let (status, text) = Squeal::run_to_end(config, primary.password(), log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("does not exist on the brokers"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_checkpoint_folder_stops_squeal() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_cp_unwritable";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    let Scenario {
        config,
        checkpoint,
        log,
        dir,
        ..
    } = &scenario;
    // squeal's own files go elsewhere, so that only the checkpoint's folder is made immutable.
    let cp_dir = dir.path().join("cp");
    std::fs::create_dir(&cp_dir)?;
    let cp = cp_dir.join("cp.json");
    scenario.edit_config(&checkpoint.display().to_string(), &cp.display().to_string())?;
    let (mut squeal, before) = run_past_two_rows(primary, config, &cp, log).await?;
    // Root ignores permission bits; the immutable attribute stops root too.
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .arg(flag)
            .arg(&cp_dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !chattr("+i") {
        eprintln!("chattr +i is not available here: skipping");
        return Ok(());
    }
    let mut stopped = None;
    // A row every 300 ms until squeal stops, for up to a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in 10.. {
        if std::time::Instant::now() > deadline {
            break;
        }
        insert_ledger_ids(primary, [id]).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stopped = squeal.child.try_wait()?;
        if stopped.is_some() {
            break;
        }
    }
    chattr("-i");
    let text = squeal.log_text();
    let status = stopped.expect("squeal stops when it cannot write its checkpoint");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("checkpoint {}", cp.display())),
        "{text}"
    );
    assert_eq!(checkpoint_of(&cp), Some(before));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_checkpoint_is_refused_and_left_alone() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    let scenario = Scenario::offline(primary.port(), LEDGER_RULES)?;
    let Scenario {
        config,
        checkpoint,
        dir,
        ..
    } = &scenario;
    let (file, pos) = master_position(primary).await?;
    for (i, body) in [
        String::new(),
        format!("{{\"version\":1,\"file\":\"{file}\",\"po"),
        format!("{{\"version\":1,\"file\":\"{file}\"}}"),
        format!("{{\"version\":1,\"file\":\"{file}\",\"pos\":\"{pos}\"}}"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(checkpoint, &body)?;
        let log = dir.path().join(format!("run{i}.log"));
        let (status, text) = Squeal::run_to_end(config, primary.password(), &log)?;
        assert_eq!(status.code(), Some(1), "{body:?}: {text}");
        assert!(text.contains("is unreadable"), "{body:?}: {text}");
        assert!(text.contains("fix or remove it deliberately"), "{text}");
        assert!(!text.contains("no checkpoint: starting here"), "{text}");
        assert_eq!(std::fs::read_to_string(checkpoint)?, body, "left as it was");
    }
    Ok(())
}

/// Two squeals with one server_id (the helper's config gives every test 4242): the server ends one's
/// stream whenever the other connects, and before, both reconnected for ever, each reading the
/// binlog only now and then (in 10 s one published nothing). Now the one taken over
/// `SAME_SERVER_ID_LIMIT` times stops with the reason and the way out, its checkpoint kept, and
/// the other reads on alone and publishes every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_one_server_id_stop_one_with_the_reason() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let first = Scenario::ledger(&stack, "inv_same_id_a", 1).await?;
    let second = Scenario::new(&stack, "inv_same_id_b", 1, LEDGER_RULES).await?;
    let primary = stack.primary();
    let mut a = Squeal::run(&first.config, primary.password(), &first.log)?;
    let mut b = Squeal::run(&second.config, primary.password(), &second.log)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut id = 1000;
    let (stopped, running, running_topic) = loop {
        insert_ledger_ids(primary, [id]).await?;
        id += 1;
        if a.child.try_wait()?.is_some() {
            break (a, b, "inv_same_id_b");
        }
        if b.child.try_wait()?.is_some() {
            break (b, a, "inv_same_id_a");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both still run after 90 s:\n{}\n{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (mut stopped, mut running) = (stopped, running);
    let text = stopped.log_text();
    assert_eq!(
        stopped.child.try_wait()?.and_then(|s| s.code()),
        Some(1),
        "{text}"
    );
    assert!(
        text.contains("another replica uses server_id 4242"),
        "{text}"
    );
    assert!(text.contains("SHOW SLAVE HOSTS"), "{text}");
    // The other one reads on: every row, those written after the stop too, reaches its topic.
    insert_ledger_ids(primary, 5000..5010).await?;
    let want = ledger_keys_of((1000..id).chain(5000..5010));
    let mut reader = TopicReader::new(&stack.kafka().brokers(), running_topic)?;
    reader
        .read_until(Duration::from_secs(60), |records| {
            let got: BTreeSet<String> = records
                .iter()
                .flat_map(|r| r.keys().map(str::to_owned))
                .collect();
            want.is_subset(&got)
        })
        .await;
    let missing: Vec<_> = want.difference(&reader.all_keys()).cloned().collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}:\n{}",
        running.log_text()
    );
    assert!(
        running.child.try_wait()?.is_none(),
        "{}",
        running.log_text()
    );
    running.terminate();
    Ok(())
}

/// Credentials the brokers refuse are a configuration error, not an outage: squeal stops with the
/// reason (exit 1) instead of waiting for ever with every record held, and the password stays out
/// of what it prints. (The brokers here speak PLAINTEXT, so a SASL client's handshake fails the way
/// a wrong password does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_the_brokers_refuse_stop_squeal_with_the_reason() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let scenario = Scenario::ledger(&stack, "inv_refused_credentials", 1).await?;
    let mut text = std::fs::read_to_string(&scenario.config)?;
    text.push_str(
        "\n[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
         \"sasl.mechanism\" = \"PLAIN\"\n\"sasl.username\" = \"squeal\"\n\
         \"sasl.password\" = \"hunter3-kafka\"\n",
    );
    std::fs::write(&scenario.config, text)?;
    let primary = stack.primary();
    let before = master_position(primary).await?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    insert_ledger_ids(primary, 1..3).await?;
    let status = squeal.wait_exit(Duration::from_secs(60));
    let text = squeal.log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "squeal must stop on refused credentials\n{text}"
    );
    assert!(text.contains("Kafka (permanent)"), "{text}");
    assert!(text.to_lowercase().contains("authentication"), "{text}");
    assert!(
        !text.contains("hunter3"),
        "the password reached the log\n{text}"
    );
    if let Some((file, pos)) = checkpoint_of(&scenario.checkpoint) {
        assert!(
            file == before.0 && pos <= before.1,
            "the checkpoint {file}:{pos} must stay before the unpublished rows (at {before:?})"
        );
    }
    Ok(())
}
